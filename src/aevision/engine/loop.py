"""The training loop: Lightning Fabric for devices, precision and DDP; the loop itself is ours.

Fabric adds ~nothing over a hand-written loop (the Trainer costs 26-30% on small autoencoders,
measured in the foundation issue), so the engine is a plain loop over in-memory batches with
Fabric handling accelerators, mixed precision, distributed strategies and loggers. It knows
nothing about particular autoencoders: the model's ``forward`` returns named loss terms. A batch
is a tensor (``model(x)``) or a tuple (``model(*batch)``, e.g. images and labels or masks). A model
may define ``param_groups(lr) -> list[dict]`` to give parts of it their own learning rates
(fine-tuning: a slower pretrained encoder than the new head), and ``on_train_epoch_start(epoch)``
(e.g. to freeze a pretrained part for the first epochs); it is called before every epoch, resumed
ones included.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from lightning.fabric import Fabric
from lightning.fabric.strategies import SingleDeviceStrategy
from torch import Tensor, nn

from aevision.config import TrainConfig
from aevision.data.batches import TensorBatches
from aevision.engine.allocator import tune_malloc
from aevision.engine.checkpoint import (
    BEST,
    LAST,
    LoopState,
    config_mismatch,
    load_checkpoint,
    save_checkpoint,
)
from aevision.engine.determinism import rng_state, set_rng_state
from aevision.engine.progress import Reporter, format_terms
from aevision.engine.resources import is_out_of_memory
from aevision.engine.schedule import lr_scheduler
from aevision.errors import AevisionError, DivergenceError
from aevision.io import read_safetensors, write_csv_rows, write_safetensors

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    """What a finished run reports; ``history`` has one dict per epoch."""

    history: list[dict[str, Any]]
    steps: int
    best_epoch: int | None
    best_val_loss: float | None
    stopped_early: bool
    train_seconds: float
    resumed_from: str | None = None
    bad_batches: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_fabric(cfg: TrainConfig, log_dir: Path | None = None) -> Fabric:
    loggers: list[Any] = []
    if log_dir is not None:
        from lightning.fabric.loggers import CSVLogger

        loggers.append(CSVLogger(str(log_dir), name="csv"))
        try:
            from lightning.fabric.loggers import TensorBoardLogger

            loggers.append(TensorBoardLogger(str(log_dir), name="tensorboard"))
        except (ImportError, ModuleNotFoundError):
            pass
        else:
            try:
                import tensorboard  # noqa: F401
            except ImportError:
                try:
                    import tensorboardX  # noqa: F401
                except ImportError:
                    loggers.pop()
    try:
        return Fabric(accelerator=cfg.accelerator, devices=cfg.devices, num_nodes=cfg.num_nodes,
                      strategy=cfg.strategy, precision=cfg.precision, loggers=loggers)
    except (ValueError, RuntimeError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise AevisionError(f"train: cannot set up accelerator/devices/strategy/precision: {first}") from None


def make_optimizer(cfg: TrainConfig, params: Any) -> torch.optim.Optimizer:
    """Adam/AdamW use the fused kernel: one pass over each tensor, no temporaries (an unfused
    step allocates buffers the size of the weights, which dominates on large dense layers)."""
    params = list(params)
    if cfg.optimizer in ("adam", "adamw"):
        cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
        try:
            return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
        except (RuntimeError, ValueError):  # a device or dtype without a fused kernel
            return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)


def defers_nonfinite_check(device: torch.device, world_size: int, optimizer: torch.optim.Optimizer,
                           precision: str) -> bool:
    """Whether the NaN guard runs on the device, without a host sync per step.

    Asking the host ``isfinite(loss)`` every step stalls a GPU: the CPU cannot queue the next
    step until the current one is done. On an H200 a plain loop with that one check ran at 0.74x
    (M1), 0.91x (M2, conv) its speed without. A fused Adam/AdamW skips its whole update on a device
    flag (``found_inf``, as under a GradScaler), so the bad step is dropped on the device and
    counted there; the host reads the count at log points and epoch ends (the learning-rate
    schedule alone still advances on a dropped step). Not under ``16-mixed`` (its GradScaler owns
    that flag) nor in DDP (a rank's bad loss reaches all ranks' gradients).
    """
    adam = isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW))
    fused = adam and bool(optimizer.defaults.get("fused"))
    return device.type == "cuda" and world_size == 1 and fused and not precision.startswith("16")


DIRECT_PRECISIONS = ("32-true", "32", "bf16-mixed")


class DirectForward:
    """The model called as Fabric's module wrapper would, minus its per-call bookkeeping.

    On one device with a precision that does not scale the loss (32-true, bf16-mixed), Fabric's
    wrappers add only per-call work to each step: a backward hook on every output tensor (to warn
    about a bare ``loss.backward()``) and the strategy/precision relays of ``backward`` and
    ``optimizer.step()``. A tiny model's step on the CPU took 1.41 ms through them, 1.08 ms with
    direct calls, 0.99 ms in a plain loop (one run, best of 5 rounds); a small model's step on a
    GPU is all such host work (bench/results/throughput_gpu). Here the loop converts inputs and
    outputs as the precision plugin does, calls the model under ``fabric.autocast()``, then
    ``loss.backward()`` and the optimizer itself; Fabric still places the model and data, sets the
    precision, and runs DDP, 16-bit loss scaling and everything else.
    """

    def __init__(self, module: nn.Module, fabric: Fabric):
        self.module, self.precision = module, fabric.strategy.precision

    @staticmethod
    def applies(fabric: Fabric, precision: str) -> bool:
        return isinstance(fabric.strategy, SingleDeviceStrategy) and precision in DIRECT_PRECISIONS

    def __call__(self, *args: Any) -> Any:
        # the plugin's own conversions (bf16-mixed: inputs to bf16, outputs to fp32; 32-true: none)
        args = self.precision.convert_input(args)
        with self.precision.forward_context():  # what fabric.autocast() enters
            out = self.module(*args)
        return self.precision.convert_output(out)

    def train(self, mode: bool = True) -> DirectForward:
        self.module.train(mode)
        return self

    def eval(self) -> DirectForward:
        return self.train(False)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.module.zero_grad(set_to_none=set_to_none)


class Trainer:
    """Fit one model: ``Trainer(cfg, out_dir).fit(model, train, val, run_config)``.

    ``out_dir`` receives ``checkpoints/`` (last + best), ``logs/`` and ``history.csv``; only the
    global-zero process writes.
    """

    def __init__(self, cfg: TrainConfig, out_dir: str | Path, *, fabric: Fabric | None = None,
                 seed: int = 0):
        self.cfg = cfg
        self.out_dir = Path(out_dir)
        self.ckpt_dir = self.out_dir / "checkpoints"
        self.fabric = fabric or make_fabric(cfg, self.out_dir / "logs")
        self.seed = seed

    # --- public ------------------------------------------------------------------------------

    def fit(self, model: nn.Module, train: TensorBatches, val: TensorBatches | None,
            run_config: dict[str, Any] | None = None, *, resume: bool = False,
            upgrade_config: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> FitResult:
        """Train ``model``; with ``resume``, continue from ``last.ckpt`` if its config is this one.

        ``upgrade_config`` reads a checkpoint's config as this version of aevision would write it
        (fields added since take their defaults), so that an upgrade between a kill and the resume
        is not mistaken for a change of config.
        """
        cfg, fabric = self.cfg, self.fabric
        fabric.launch()
        if cfg.tune_allocator:
            tune_malloc()
        raw = model
        if cfg.channels_last:
            raw = raw.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
            train.channels_last = True
            if val is not None:
                val.channels_last = True
        groups = getattr(raw, "param_groups", None)
        optimizer = make_optimizer(cfg, groups(cfg.lr) if callable(groups) else raw.parameters())
        module = torch.compile(raw) if cfg.compile else raw
        wrapped, optimizer = fabric.setup(module, optimizer)
        rank, world = fabric.global_rank, fabric.world_size
        direct = DirectForward.applies(fabric, cfg.precision)
        forward: Any = DirectForward(module, fabric) if direct else wrapped
        inner = getattr(optimizer, "optimizer", optimizer)  # the torch optimizer Fabric wraps
        deferred = defers_nonfinite_check(fabric.device, world, inner, cfg.precision)
        if fabric.device.type != "cpu":
            train.to(fabric.device)
            if val is not None:
                val.to(fabric.device)
        batches = train.num_batches(world)
        if batches == 0:
            raise AevisionError("train: no training batches (empty training set)")
        # on the optimizer itself: the scheduler counts its steps, which the direct path takes
        scheduler = lr_scheduler(inner, cfg, cfg.epochs * batches)
        run_config = run_config or {}
        loop = LoopState()
        resumed_from = None
        last_path = self.ckpt_dir / LAST
        if fabric.is_global_zero:
            remove_stale_temp_files(self.ckpt_dir)
        if cfg.auto_batch_size:
            self._fit_batch_size(forward, train)
            batches = train.num_batches(world)
        if resume:
            if last_path.is_file():
                loop = self._restore(last_path, raw, optimizer, scheduler, run_config, upgrade_config)
                resumed_from = str(last_path)
            else:
                log.warning("--resume: no checkpoint at %s; starting from scratch", last_path)
        if world > 1 and resumed_from is None:
            torch.manual_seed(self.seed + rank)  # distinct noise streams per rank

        report = Reporter(fabric.is_global_zero and cfg.progress, True, cfg.epochs, batches)
        best_state = self._load_best(raw) if loop.best_epoch is not None else None
        stopped_early = False
        total_train_s = sum(h.get("train_seconds", 0.0) for h in loop.history)
        try:
            for epoch in range(loop.epoch, cfg.epochs):
                hook = getattr(raw, "on_train_epoch_start", None)
                if callable(hook):
                    hook(epoch)
                report.start_epoch(epoch, loop.batch)
                self._train_epoch(forward, wrapped, optimizer, scheduler, train, epoch, loop,
                                  report, raw, run_config, inner=inner, deferred=deferred)
                train_terms = self._epoch_means(loop, batches)
                if world > 1:  # each rank saw its slice of every batch: report the global mean
                    reduced = fabric.all_reduce(
                        {k: torch.tensor(v, dtype=torch.float64, device=fabric.device)
                         for k, v in train_terms.items()},
                        reduce_op="mean")
                    train_terms = {k: float(v) for k, v in reduced.items()}
                val_terms = self._evaluate(forward, val) if val is not None else {}
                seconds = loop.seconds
                total_train_s += seconds
                images = train.shard_size(world) if not train.drop_last else batches * train.batch_size
                images *= train.images_per_item  # clips of T frames: T images each
                row: dict[str, Any] = {"epoch": epoch + 1, "step": loop.step}
                row.update({f"train_{k}": v for k, v in train_terms.items()})
                row.update({f"val_{k}": v for k, v in val_terms.items()})
                row["train_seconds"] = round(seconds, 4)
                row["images_per_s"] = round(images * world / seconds, 1) if seconds > 0 else None
                row["data_wait_fraction"] = round(loop.sums.get("__wait__", 0.0) / seconds, 4) \
                    if seconds > 0 else None
                row["lr"] = optimizer.param_groups[0]["lr"]
                loop.history.append(row)
                monitored = val_terms.get("loss", train_terms.get("loss"))
                improved = monitored is not None and math.isfinite(monitored) and (
                    loop.best_val is None or monitored < loop.best_val)
                if improved:
                    loop.best_val, loop.best_epoch, loop.bad_epochs = monitored, epoch + 1, 0
                    best_state = {k: v.detach().clone() for k, v in raw.state_dict().items()}
                    if fabric.is_global_zero:
                        write_safetensors(self.ckpt_dir / BEST, best_state)
                else:
                    loop.bad_epochs += 1
                loop.epoch, loop.batch, loop.sums, loop.seconds = epoch + 1, 0, {}, 0.0
                self._save(last_path, raw, optimizer, scheduler, loop, run_config)
                if fabric.is_global_zero:
                    write_csv_rows(self.out_dir / "history.csv", loop.history)
                report.line(_epoch_line(row, cfg.epochs, improved and val is not None))
                for k, v in row.items():
                    if isinstance(v, float) and k.startswith(("train_", "val_")):
                        fabric.log(f"epoch/{k}", v, step=loop.step)
                patience = cfg.early_stopping_patience
                if patience is not None and loop.bad_epochs >= patience:
                    stopped_early = True
                    report.line(f"early stopping: no improvement for {patience} epochs")
                    break
        finally:
            report.close()
            for logger in fabric.loggers:
                logger.finalize("success")
        if best_state is not None and val is not None:
            raw.load_state_dict(best_state)
        return FitResult(
            history=loop.history, steps=loop.step, best_epoch=loop.best_epoch,
            best_val_loss=loop.best_val, stopped_early=stopped_early,
            train_seconds=round(total_train_s, 3), resumed_from=resumed_from,
            bad_batches=loop.bad_batches,
        )

    # --- one epoch ---------------------------------------------------------------------------

    def _train_epoch(self, forward: Any, wrapped: nn.Module, optimizer: Any, scheduler: Any,
                     train: TensorBatches, epoch: int, loop: LoopState, report: Reporter,
                     raw: nn.Module, run_config: dict[str, Any], *, inner: torch.optim.Optimizer,
                     deferred: bool) -> None:
        """One epoch. ``forward`` is ``wrapped`` (Fabric's module) or a :class:`DirectForward`,
        with which backward and the optimizer step (``inner``, the optimizer Fabric wraps) are
        called directly too; ``deferred``: the NaN check runs on the device."""
        cfg, fabric = self.cfg, self.fabric
        forward.train()
        direct = isinstance(forward, DirectForward)
        sums: dict[str, Tensor] = {}
        wait = 0.0
        every_ckpt = cfg.checkpoint_every_n_steps
        log_every = cfg.log_every_n_steps
        # steps dropped on the device since the host last looked, and the first of those steps
        bad_steps = torch.zeros((), dtype=torch.int32, device=fabric.device) if deferred else None
        first_unchecked = loop.step + 1
        start = time.perf_counter()
        batch_no = loop.batch
        it = train.epoch(epoch, fabric.global_rank, fabric.world_size, start=loop.batch)
        while True:
            t0 = time.perf_counter()
            xb = next(it, None)
            wait += time.perf_counter() - t0
            if xb is None:
                break
            try:
                terms = call_model(forward, xb)
                loss = terms["loss"]
                if deferred:
                    bad = ~torch.isfinite(loss)
                elif not bool(torch.isfinite(loss)):
                    self._nonfinite(terms, epoch, batch_no, loop)
                    batch_no += 1
                    continue
                optimizer.zero_grad(set_to_none=True)
                self._backward(forward, loss)
                if cfg.gradient_clip_norm is not None:
                    norm = fabric.clip_gradients(wrapped, optimizer, max_norm=cfg.gradient_clip_norm,
                                                 error_if_nonfinite=False)
                    if deferred and norm is not None:
                        bad = bad | ~torch.isfinite(norm)
                    elif norm is not None and not bool(torch.isfinite(norm)):
                        # a finite loss can still overflow its gradients (a spike under bf16);
                        # one step on them leaves inf in Adam's second moments, which freezes
                        # those weights for the rest of the run without any error
                        optimizer.zero_grad(set_to_none=True)
                        self._nonfinite({"grad_norm": norm}, epoch, batch_no, loop, "gradient norm")
                        batch_no += 1
                        continue
                if deferred:
                    inner.found_inf = bad.float()  # 1: the fused kernel leaves weights and moments
                (inner if direct else optimizer).step()
            except (torch.OutOfMemoryError, MemoryError, RuntimeError) as e:
                if not is_out_of_memory(e):
                    raise
                size = batch_images(xb).shape[0]
                raise out_of_memory_error(e, loop.step + 1, size, fabric.device) from None
            if scheduler is not None:
                scheduler.step()
            loop.step += 1
            batch_no += 1
            if deferred:
                bad_steps += bad
            for k, v in terms.items():
                d = torch.where(bad, 0.0, v.detach()) if deferred else v.detach()
                sums[k] = sums[k] + d if k in sums else d.clone()
            logging_now = loop.step % log_every == 0
            checkpointing = bool(every_ckpt) and loop.step % every_ckpt == 0
            if deferred and (logging_now or checkpointing):
                first_unchecked = self._settle(bad_steps, first_unchecked, epoch, loop)
            if logging_now:
                fabric.log_dict({f"step/{k}": float(v.detach()) for k, v in terms.items()},
                                step=loop.step)
            report.advance()
            if checkpointing:
                loop.batch = batch_no
                self._merge_sums(loop, sums, wait, time.perf_counter() - start)
                sums, wait, start = {}, 0.0, time.perf_counter()
                self._save(self.ckpt_dir / LAST, raw, optimizer, scheduler, loop, run_config)
        if deferred:  # also waits for the last step, so the epoch's time below is all of it
            self._settle(bad_steps, first_unchecked, epoch, loop)
        loop.batch = batch_no
        self._merge_sums(loop, sums, wait, time.perf_counter() - start)

    def _settle(self, bad_steps: Tensor, first: int, epoch: int, loop: LoopState) -> int:
        """Read the device's count of dropped steps (a host sync); skip or stop as the per-step
        check would. Returns the first step not yet checked."""
        new = int(bad_steps)
        if new:
            bad_steps.zero_()
            loop.step -= new  # steps count updates, as when the host skips a batch
            where = f"{new} of steps {first}-{loop.step + new} (epoch {epoch + 1})"
            self._skip_or_stop(where, "loss or gradient norm (dropped on the device)", new, loop)
        return loop.step + 1

    @staticmethod
    def _merge_sums(loop: LoopState, sums: dict[str, Tensor], wait: float, seconds: float) -> None:
        for k, v in sums.items():
            loop.sums[k] = loop.sums.get(k, 0.0) + float(v)
        loop.sums["__wait__"] = loop.sums.get("__wait__", 0.0) + wait
        loop.seconds += seconds

    @staticmethod
    def _epoch_means(loop: LoopState, batches: int) -> dict[str, float]:
        done = max(1, batches - loop.sums.get("__skipped__", 0.0))
        return {k: v / done for k, v in loop.sums.items() if not k.startswith("__")}

    def _nonfinite(self, terms: dict[str, Tensor], epoch: int, batch: int, loop: LoopState,
                   what: str = "loss terms") -> None:
        values = {k: float(v.detach()) for k, v in terms.items()}
        bad = ", ".join(f"{k}={v:g}" for k, v in values.items() if not math.isfinite(v))
        where = f"step {loop.step + 1} (epoch {epoch + 1}, batch {batch + 1})"
        self._skip_or_stop(where, f"{what} {bad}", 1, loop)

    def _skip_or_stop(self, where: str, what: str, count: int, loop: LoopState) -> None:
        if self.cfg.skip_nonfinite and loop.bad_batches + count <= self.cfg.max_bad_batches:
            loop.bad_batches += count
            loop.sums["__skipped__"] = loop.sums.get("__skipped__", 0.0) + count
            log.warning("skipped batch at %s: non-finite %s", where, what)
            return
        keep = self.ckpt_dir / LAST
        kept = f"; last good checkpoint: {keep}" if keep.is_file() else ""
        hint = ("" if self.cfg.skip_nonfinite else
                "; lower train.lr or a regularizer weight, or set train.skip_nonfinite=true")
        raise DivergenceError(f"training diverged at {where}: non-finite {what}{kept}{hint}")

    @torch.no_grad()
    def _evaluate(self, forward: Any, val: TensorBatches) -> dict[str, float]:
        """Mean loss terms on the validation set (every rank sees all of it: no communication)."""
        forward.eval()
        sums: dict[str, float] = {}
        count = 0
        for xb in val.epoch(0):
            terms = call_model(forward, xb)
            n = batch_images(xb).shape[0]
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v) * n
            count += n
        return {k: v / max(1, count) for k, v in sums.items()}

    def _fit_batch_size(self, forward: Any, train: TensorBatches) -> None:
        """Halve the batch size until one training step fits in memory (``train.auto_batch_size``).

        ``forward`` is the loop's: the probe calls the model as every step does (``model(x, y)``
        on batches with targets) and runs the same backward."""
        size = asked = train.batch_size
        while True:
            batch = next(train.epoch(0), None)
            if batch is None:
                return
            try:
                forward.train()
                self._backward(forward, call_model(forward, batch)["loss"])
                forward.zero_grad(set_to_none=True)
                if size != asked:
                    log.warning("train.batch_size %d does not fit in memory; using %d instead",
                                asked, size)
                return
            except (torch.OutOfMemoryError, MemoryError, RuntimeError) as e:
                if not is_out_of_memory(e) or size == 1:
                    raise
                del batch
                forward.zero_grad(set_to_none=True)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                size = max(1, size // 2)
                train.batch_size = size

    def _backward(self, forward: Any, loss: Tensor) -> None:
        """``loss.backward()`` on the direct path, Fabric's (loss scaling, DDP) otherwise."""
        if isinstance(forward, DirectForward):
            loss.backward()
        else:
            self.fabric.backward(loss)

    # --- checkpoints -------------------------------------------------------------------------

    def _save(self, path: Path, raw: nn.Module, optimizer: Any, scheduler: Any, loop: LoopState,
              run_config: dict[str, Any]) -> None:
        if self.fabric.is_global_zero:
            save_checkpoint(
                path, model=raw.state_dict(), optimizer=optimizer.state_dict(),
                scheduler=scheduler.state_dict() if scheduler is not None else None,
                loop=loop, rng=rng_state(), config=run_config,
            )
        self.fabric.barrier()

    def _restore(self, path: Path, raw: nn.Module, optimizer: Any, scheduler: Any,
                 run_config: dict[str, Any],
                 upgrade_config: Callable[[dict[str, Any]], dict[str, Any]] | None) -> LoopState:
        ckpt = load_checkpoint(path)
        saved = ckpt.get("config") or {}
        if saved and upgrade_config is not None:
            # one not readable as a config of today is compared as written: the difference shows
            with contextlib.suppress(AevisionError, TypeError, ValueError):
                saved = upgrade_config(saved)
        diff = config_mismatch(saved, run_config)
        if diff:
            raise AevisionError(f"{path}: cannot resume, the config changed ({diff}); "
                                f"use another output_dir for a new run")
        try:
            raw.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
        except (RuntimeError, KeyError, ValueError) as e:
            first = str(e).splitlines()[0]
            raise AevisionError(f"{path}: checkpoint does not fit this model ({first})") from None
        if scheduler is not None and ckpt.get("scheduler"):
            scheduler.load_state_dict(ckpt["scheduler"])
        set_rng_state(ckpt["rng"])
        return ckpt["loop"]

    def _load_best(self, raw: nn.Module) -> dict[str, Tensor] | None:
        path = self.ckpt_dir / BEST
        if not path.is_file():
            return None
        state = read_safetensors(path, "best weights")
        return {k: v for k, v in state.items()} if set(state) == set(raw.state_dict()) else None


def call_model(forward: Any, batch: Tensor | tuple[Tensor, ...]) -> Any:
    """``model(x)``, or ``model(x, y)`` for a batch with targets: how every step calls the model."""
    return forward(*batch) if isinstance(batch, tuple) else forward(batch)


def batch_images(batch: Tensor | tuple[Tensor, ...]) -> Tensor:
    """The images of a batch (the first of a tuple)."""
    return batch[0] if isinstance(batch, tuple) else batch


def out_of_memory_error(e: BaseException, step: int, batch: int, device: torch.device) -> AevisionError:
    return AevisionError(
        f"out of memory at step {step} (batch of {batch} on {device}): lower train.batch_size, "
        f"set train.auto_batch_size=true, or use train.precision=bf16-mixed")


def remove_stale_temp_files(folder: Path) -> None:
    """Temp files left by a process killed mid-write (the real files were never replaced)."""
    if folder.is_dir():
        for tmp in folder.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)


def _epoch_line(row: dict[str, Any], epochs: int, improved: bool) -> str:
    train = {k[6:]: v for k, v in row.items() if k.startswith("train_") and k != "train_seconds"}
    val = {k[4:]: v for k, v in row.items() if k.startswith("val_")}
    speed = f"{row['images_per_s']:,.0f} img/s" if row.get("images_per_s") else ""
    mark = " *" if improved else ""
    parts = [f"epoch {row['epoch']}/{epochs}", format_terms("", train)]
    if val:
        parts.append(format_terms("val_", {"loss": val.get("loss", float("nan"))}) + mark)
    parts.append(f"{row['train_seconds']:.1f}s {speed}")
    return "  ".join(p for p in parts if p)
