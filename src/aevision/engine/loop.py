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
import itertools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from lightning.fabric import Fabric
from lightning.fabric.strategies import SingleDeviceStrategy
from torch import Tensor, nn

from aevision.config import TrainConfig
from aevision.data.batches import Batches, TensorBatches
from aevision.engine.allocator import tuned_malloc
from aevision.engine.batchnorm import batch_norm_momentum, recompute_batch_norm
from aevision.engine.checkpoint import (
    BEST,
    LAST,
    LoopState,
    config_mismatch,
    load_checkpoint,
    save_checkpoint,
)
from aevision.engine.determinism import rng_state, set_rng_state
from aevision.engine.gpu_probe import drop_gpu_probe
from aevision.engine.precision import AUTO, resolve_precision
from aevision.engine.progress import Reporter, format_terms
from aevision.engine.resources import is_out_of_memory
from aevision.engine.schedule import follow_plan, lr_scheduler
from aevision.engine.tracking import build_loggers, log_params
from aevision.errors import AevisionError, ConfigError, DivergenceError
from aevision.io import read_safetensors, write_csv_rows, write_safetensors
from aevision.validation import plural

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    """What a finished run reports; ``history`` has one dict per epoch.

    ``monitored`` names what picked ``best_epoch`` (``val_loss``, or ``val_<train.monitor>``) and
    ``best_monitored`` is its value there; ``best_val_loss`` is the validation loss of that epoch.
    Without a validation split the last epoch's weights are kept (a lower training loss is no reason
    to go back): ``best_epoch`` is the last epoch, ``monitored`` ``train_loss`` and both values its
    training loss."""

    history: list[dict[str, Any]]
    steps: int
    best_epoch: int | None
    best_val_loss: float | None
    stopped_early: bool
    train_seconds: float
    train_cpu_seconds: float | None = None  # None when an epoch predates CPU timing
    resumed_from: str | None = None
    bad_batches: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    monitored: str = "val_loss"
    best_monitored: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Validation:
    """One pass of the model over the validation split: the mean loss terms (lower is better) and
    the task's scores (higher is better, e.g. ``{"miou": 0.71}``). Both are recorded each epoch as
    ``val_<name>``, and ``train.monitor`` may pick the best epoch by any of them."""

    terms: dict[str, float]
    scores: dict[str, float] = field(default_factory=dict)


class TermMeans:
    """Loss terms averaged over a split's batches, each batch weighted by its images: the
    validation loss the engine records, and what a task's own pass (:data:`Validate`) reports."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0

    def add(self, terms: dict[str, Tensor], images: int) -> None:
        for k, v in terms.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v) * images
        self.count += images

    def means(self) -> dict[str, float]:
        return {k: v / max(1, self.count) for k, v in self.sums.items()}


# a task's own validation pass, ``validate(model, val_batches)``: the loss terms and its scores from
# the same outputs (one pass over the split, not the engine's loss pass and a second for scores)
Validate = Callable[[nn.Module, Batches], Validation]

MIN_STEPS = 200  # fewer optimiser steps than this rarely train a network: say so before training


def size_epochs(train: Batches, cfg: TrainConfig, world_size: int) -> None:
    """``train.epoch_steps``: every epoch draws that many batches (of the batch size in use, on
    every process), whatever the data's size (in-memory data; a stream's epoch is one pass)."""
    if cfg.epoch_steps is None:
        return
    if not isinstance(train, TensorBatches):
        raise ConfigError("train.epoch_steps", cfg.epoch_steps,
                          "null for streamed data (an epoch of a stream is one pass over it)")
    train.epoch_size = cfg.epoch_steps * train.batch_size * world_size


def monitored_name(cfg: TrainConfig, val: Batches | None) -> str:
    """What picks the best epoch, as the history names it: ``val_<train.monitor>``, or
    ``train_loss`` when there is no validation split."""
    return f"val_{cfg.monitor}" if val is not None else "train_loss"


def say_unmonitored(cfg: TrainConfig, val: Batches | None) -> None:
    """One line when ``train.monitor`` names something only a validation split gives and there is
    none (the name itself is checked against the validation's terms and scores after epoch 1)."""
    if cfg.monitor != "loss" and val is None:
        log.info("train.monitor %s: no validation split, so the last epoch's weights are kept",
                 cfg.monitor)


def warn_few_steps(cfg: TrainConfig, train: Batches, batches: int, world_size: int) -> None:
    """A warning when the whole run takes fewer than :data:`MIN_STEPS` optimiser steps (ten masks,
    or 45 images in batches of 128: a step or two per epoch), saying how to size epochs instead."""
    total = cfg.epochs * batches
    if total >= MIN_STEPS:
        return
    n = train.shard_size(1)
    smaller = (f"; train.batch_size {train.batch_size} is larger than the {n} training samples"
               if train.batch_size * world_size > n else "")
    log.warning("train: %d optimiser steps in all (%d epochs x %d of %d samples in batches of %d%s); "
                "under %d a network rarely trains: set train.epoch_steps (steps per epoch) or more "
                "train.epochs", total, cfg.epochs, batches, n, train.batch_size, smaller,
                MIN_STEPS)


def with_precision_resolved(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with ``precision: auto`` replaced by what this machine runs best, said in the log
    (:func:`aevision.engine.precision.resolve_precision`); any other precision as it is."""
    if cfg.precision != AUTO:
        return cfg
    precision, why = resolve_precision(cfg.precision, cfg.accelerator)
    log.info("train.precision=auto: %s (%s)", precision, why)
    return replace(cfg, precision=precision)


def make_fabric(cfg: TrainConfig, log_dir: Path | None = None) -> Fabric:
    """Fabric for ``cfg``'s devices and precision, with its ``loggers`` writing under ``log_dir``
    (none without it); an MLflow run is named after the run folder (``log_dir``'s parent)."""
    loggers = build_loggers(cfg.loggers, log_dir, log_dir.resolve().parent.name) if log_dir else []
    try:
        return Fabric(accelerator=cfg.accelerator, devices=cfg.devices, num_nodes=cfg.num_nodes,
                      strategy=cfg.strategy, precision=with_precision_resolved(cfg).precision,
                      loggers=loggers)
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
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                           weight_decay=cfg.weight_decay)


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


@dataclass
class _Fit:
    """One ``fit``: the pieces set up once (model, optimizer, data) and where the run stands."""

    raw: nn.Module  # the caller's model: checkpoints, hooks and best weights read it
    wrapped: nn.Module  # Fabric's module (gradient clipping; DDP runs through it)
    forward: Any  # what a step calls: ``wrapped`` or a :class:`DirectForward`
    optimizer: Any  # Fabric's optimizer
    inner: torch.optim.Optimizer  # the torch optimizer Fabric wraps
    scheduler: Any
    deferred: bool  # the NaN check runs on the device (:func:`defers_nonfinite_check`)
    train: Batches
    val: Batches | None
    run_config: dict[str, Any]
    validate: Validate | None = None  # the task's validation pass (default: the loss terms)
    batches: int = 0  # training batches per epoch on this rank
    loop: LoopState = field(default_factory=LoopState)
    resumed_from: str | None = None
    best_state: dict[str, Tensor] | None = None
    train_seconds: float = 0.0  # all epochs', resumed ones included
    stopped_early: bool = False

    @property
    def direct(self) -> bool:
        """Backward and the optimizer step are called directly, not through Fabric."""
        return isinstance(self.forward, DirectForward)


@dataclass
class _Epoch:
    """The epoch in progress, since its start or its last mid-epoch checkpoint."""

    batch: int  # batches of the epoch done (skipped ones included)
    first_unchecked: int  # the first step the deferred NaN check has not yet read
    bad_steps: Tensor | None  # steps dropped on the device since the host last looked
    sums: dict[str, Tensor] = field(default_factory=dict)
    wait: float = 0.0  # seconds spent waiting for batches
    start: float = field(default_factory=time.perf_counter)
    cpu_start: float = field(default_factory=time.process_time)

    def merge_into(self, loop: LoopState) -> None:
        """Add the sums and times to ``loop`` (the checkpointed totals) and start counting anew."""
        for k, v in self.sums.items():
            loop.sums[k] = loop.sums.get(k, 0.0) + float(v)
        loop.sums["__wait__"] = loop.sums.get("__wait__", 0.0) + self.wait
        loop.seconds += time.perf_counter() - self.start
        loop.cpu_seconds += time.process_time() - self.cpu_start
        self.sums, self.wait, self.start, self.cpu_start = {}, 0.0, time.perf_counter(), time.process_time()


def _cpu_total(history: list[dict[str, Any]]) -> float | None:
    """The CPU seconds of all epochs' training (resumed ones included), or None when an epoch
    (from a checkpoint written before CPU time was recorded) lacks them."""
    cpu = [h.get("cpu_seconds") for h in history]
    return round(sum(cpu), 3) if cpu and None not in cpu else None  # type: ignore[arg-type]


class Trainer:
    """Fit one model: ``Trainer(cfg, out_dir).fit(model, train, val, run_config)``.

    ``out_dir`` receives ``checkpoints/`` (last + best), ``logs/`` and ``history.csv``; only the
    global-zero process writes.
    """

    def __init__(self, cfg: TrainConfig, out_dir: str | Path, *, fabric: Fabric | None = None,
                 seed: int = 0):
        self.cfg = with_precision_resolved(cfg)
        self.out_dir = Path(out_dir)
        self.ckpt_dir = self.out_dir / "checkpoints"
        self.fabric = fabric or make_fabric(self.cfg, self.out_dir / "logs")
        self.seed = seed

    # --- public ------------------------------------------------------------------------------

    def fit(self, model: nn.Module, train: Batches, val: Batches | None,
            run_config: dict[str, Any] | None = None, *, resume: bool = False,
            upgrade_config: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
            validate: Validate | None = None) -> FitResult:
        """Train ``model``; with ``resume``, continue from ``last.ckpt`` if its config is this one.

        ``validate(model, val)``: the task's validation pass after each epoch (see :data:`Validate`),
        run at the training precision, instead of the engine's, which computes the loss terms alone;
        ``train.monitor`` may name any of its terms or scores.
        ``upgrade_config`` reads a checkpoint's config as this version of aevision would write it
        (fields added since take their defaults), so that an upgrade between a kill and the resume
        is not mistaken for a change of config.
        Freed memory stays in the heap while it trains (``train.tune_allocator``; see
        :mod:`aevision.engine.allocator`), not after; ``train.batch_norm_momentum`` holds for the
        run too (:mod:`aevision.engine.batchnorm`).
        """
        with tuned_malloc(self.cfg.tune_allocator), batch_norm_momentum(model, self.cfg.batch_norm_momentum):
            return self._fit(model, train, val, run_config, resume=resume, upgrade_config=upgrade_config,
                             validate=validate)

    def _fit(self, model: nn.Module, train: Batches, val: Batches | None,
             run_config: dict[str, Any] | None, *, resume: bool,
             upgrade_config: Callable[[dict[str, Any]], dict[str, Any]] | None,
             validate: Validate | None) -> FitResult:
        cfg, fabric = self.cfg, self.fabric
        fit = self._setup(model, train, val, run_config or {})
        fit.validate = validate
        if fabric.is_global_zero:
            say_unmonitored(cfg, val)
        if resume:
            self._resume(fit, upgrade_config)
        if fabric.world_size > 1 and fit.resumed_from is None:
            torch.manual_seed(self.seed + fabric.global_rank)  # distinct noise streams per rank
        report = Reporter(fabric.is_global_zero and cfg.progress, True, cfg.epochs, fit.batches)
        log_params(fabric.loggers, fit.run_config)
        status = "failed"
        try:
            for epoch in range(fit.loop.epoch, cfg.epochs):
                hook = getattr(fit.raw, "on_train_epoch_start", None)
                if callable(hook):
                    hook(epoch)
                report.start_epoch(epoch, fit.loop.batch)
                self._train_epoch(fit, epoch, report)
                if self._end_epoch(fit, epoch, report):
                    break
            status = "success"
        finally:
            report.close()
            for logger in fabric.loggers:
                logger.finalize(status)
        if fit.best_state is not None and val is not None:
            fit.raw.load_state_dict(fit.best_state)
        if cfg.channels_last:  # back as it came: a channels-last conv rounds differently, so the
            # model returned would not compute exactly what its saved copy, read back, computes
            fit.raw.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
        loop = fit.loop
        monitored = monitored_name(cfg, val)
        # without validation the last epoch's weights are kept: that is the epoch to report
        last = loop.history[-1]["epoch"] if loop.history else None
        best_epoch = loop.best_epoch if val is not None else last
        kept = next((r for r in loop.history if r.get("epoch") == best_epoch), {})
        best_monitored = loop.best_val if val is not None else kept.get("train_loss")
        return FitResult(
            history=loop.history, steps=loop.step, best_epoch=best_epoch,
            best_val_loss=best_monitored if monitored in ("val_loss", "train_loss") else kept.get("val_loss"),
            stopped_early=fit.stopped_early,
            train_seconds=round(fit.train_seconds, 3), train_cpu_seconds=_cpu_total(loop.history),
            resumed_from=fit.resumed_from,
            bad_batches=loop.bad_batches, monitored=monitored, best_monitored=best_monitored,
        )

    # --- setup -------------------------------------------------------------------------------

    def _setup(self, model: nn.Module, train: Batches, val: Batches | None,
               run_config: dict[str, Any]) -> _Fit:
        """Devices, model, optimizer, schedule and data, ready for the first (or resumed) epoch."""
        cfg, fabric = self.cfg, self.fabric
        fabric.launch()
        drop_gpu_probe(fabric.device)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
            for batches in (train, val):
                if batches is not None:
                    batches.channels_last = True
        fit = self._setup_model(model, train, val, run_config)
        if fabric.device.type != "cpu":
            for batches in (train, val):
                if batches is not None:
                    batches.to(fabric.device)
        size_epochs(train, cfg, fabric.world_size)
        fit.batches = train.num_batches(fabric.world_size)
        if fit.batches == 0:
            raise AevisionError("train: no training batches (empty training set)")
        if fabric.is_global_zero:
            remove_stale_temp_files(self.ckpt_dir)
        if cfg.auto_batch_size:
            self._fit_batch_size(fit.forward, train)
            size_epochs(train, cfg, fabric.world_size)
            fit.batches = train.num_batches(fabric.world_size)
        if fabric.is_global_zero:
            warn_few_steps(cfg, train, fit.batches, fabric.world_size)
        # over the steps of the batch size in use; on the optimizer itself: the scheduler counts
        # its steps, which the direct path takes
        fit.scheduler = lr_scheduler(fit.inner, cfg, cfg.epochs * fit.batches)
        return fit

    def _setup_model(self, raw: nn.Module, train: Batches, val: Batches | None,
                     run_config: dict[str, Any]) -> _Fit:
        """The optimizer (the model's own ``param_groups`` if it has them), ``torch.compile``,
        Fabric's wrappers, and whether steps bypass them (:class:`DirectForward`)."""
        cfg, fabric = self.cfg, self.fabric
        groups = getattr(raw, "param_groups", None)
        optimizer = make_optimizer(cfg, groups(cfg.lr) if callable(groups) else raw.parameters())
        module = torch.compile(raw) if cfg.compile else raw
        wrapped, optimizer = fabric.setup(module, optimizer)
        direct = DirectForward.applies(fabric, cfg.precision)
        forward: Any = DirectForward(module, fabric) if direct else wrapped
        inner = getattr(optimizer, "optimizer", optimizer)  # the torch optimizer Fabric wraps
        deferred = defers_nonfinite_check(fabric.device, fabric.world_size, inner, cfg.precision)
        return _Fit(raw=raw, wrapped=wrapped, forward=forward, optimizer=optimizer, inner=inner,
                    scheduler=None, deferred=deferred, train=train, val=val, run_config=run_config)

    def _resume(self, fit: _Fit, upgrade_config: Callable[[dict[str, Any]], dict[str, Any]] | None
                ) -> None:
        """Continue from ``last.ckpt`` (weights, optimizer, schedule, RNG, loop) if there is one."""
        path = self.ckpt_dir / LAST
        if not path.is_file():
            log.warning("--resume: no checkpoint at %s; starting from scratch", path)
            return
        fit.loop = loop = self._restore(path, fit, upgrade_config)
        fit.resumed_from = str(path)
        if self.fabric.is_global_zero:  # one line, whatever the number of processes
            within = f" (batch {loop.batch} of epoch {loop.epoch + 1})" if loop.batch else ""
            log.info("resumed from epoch %d, step %d%s: %s", loop.epoch, loop.step, within, path)
        fit.train_seconds = sum(h.get("train_seconds", 0.0) for h in fit.loop.history)
        if fit.loop.best_epoch is not None:
            fit.best_state = self._load_best(fit.raw)

    # --- one epoch ---------------------------------------------------------------------------

    def _train_epoch(self, fit: _Fit, epoch: int, report: Reporter) -> None:
        """The training steps of ``epoch``, from the batch ``fit.loop`` stands at."""
        fabric, loop = self.fabric, fit.loop
        fit.forward.train()
        bad_steps = torch.zeros((), dtype=torch.int32, device=fabric.device) if fit.deferred else None
        ep = _Epoch(batch=loop.batch, first_unchecked=loop.step + 1, bad_steps=bad_steps)
        it = fit.train.epoch(epoch, fabric.global_rank, fabric.world_size, start=loop.batch)
        while True:
            t0 = time.perf_counter()
            xb = next(it, None)
            ep.wait += time.perf_counter() - t0
            if xb is None:
                break
            try:
                done = self._step(fit, xb, epoch, ep.batch)
            except (torch.OutOfMemoryError, MemoryError, RuntimeError) as e:
                if not is_out_of_memory(e):
                    raise
                size = batch_images(xb).shape[0]
                raise out_of_memory_error(e, loop.step + 1, size, fabric.device) from None
            ep.batch += 1
            if done is not None:
                self._after_step(fit, epoch, ep, *done)
                report.advance()
        if fit.deferred:  # also waits for the last step, so the epoch's time below is all of it
            self._settle(ep, epoch, loop)
        loop.batch = ep.batch
        ep.merge_into(loop)

    def _step(self, fit: _Fit, xb: Any, epoch: int, batch: int
              ) -> tuple[dict[str, Tensor], Tensor | None] | None:
        """One optimizer step on ``xb``: its loss terms and (deferred check) whether the device
        dropped it; None when the host skipped a non-finite loss or gradient norm."""
        cfg = self.cfg
        terms = call_model(fit.forward, xb)
        loss = terms["loss"]
        bad = None
        if fit.deferred:
            bad = ~torch.isfinite(loss)
        elif not bool(torch.isfinite(loss)):
            self._nonfinite(terms, epoch, batch, fit.loop)
            return None
        fit.optimizer.zero_grad(set_to_none=True)
        self._backward(fit.forward, loss)
        if cfg.gradient_clip_norm is not None:
            norm = self.fabric.clip_gradients(fit.wrapped, fit.optimizer, max_norm=cfg.gradient_clip_norm,
                                              error_if_nonfinite=False)
            if fit.deferred and norm is not None:
                bad = bad | ~torch.isfinite(norm)
            elif norm is not None and not bool(torch.isfinite(norm)):
                # a finite loss can still overflow its gradients (a spike under bf16); one step
                # on them leaves inf in Adam's second moments, which freezes those weights for
                # the rest of the run without any error
                fit.optimizer.zero_grad(set_to_none=True)
                self._nonfinite({"grad_norm": norm}, epoch, batch, fit.loop, "gradient norm")
                return None
        if fit.deferred:
            fit.inner.found_inf = bad.float()  # 1: the fused kernel leaves weights and moments
        (fit.inner if fit.direct else fit.optimizer).step()
        return terms, bad

    def _after_step(self, fit: _Fit, epoch: int, ep: _Epoch, terms: dict[str, Tensor],
                    bad: Tensor | None) -> None:
        """Count a step taken: the schedule, the epoch's sums, step logs, mid-epoch checkpoints."""
        cfg, loop = self.cfg, fit.loop
        if fit.scheduler is not None:
            fit.scheduler.step()
        loop.step += 1
        if bad is not None and ep.bad_steps is not None:
            ep.bad_steps += bad
        for k, v in terms.items():
            d = torch.where(bad, 0.0, v.detach()) if bad is not None else v.detach()
            ep.sums[k] = ep.sums[k] + d if k in ep.sums else d.clone()
        logging_now = loop.step % cfg.log_every_n_steps == 0
        every = cfg.checkpoint_every_n_steps
        checkpointing = bool(every) and loop.step % every == 0
        if fit.deferred and (logging_now or checkpointing):
            self._settle(ep, epoch, loop)
        if logging_now:
            self.fabric.log_dict({f"step/{k}": float(v.detach()) for k, v in terms.items()},
                                 step=loop.step)
        if checkpointing:
            loop.batch = ep.batch
            ep.merge_into(loop)
            self._save(fit)

    def _settle(self, ep: _Epoch, epoch: int, loop: LoopState) -> None:
        """Read the device's count of dropped steps (a host sync); skip or stop as the per-step
        check would."""
        if ep.bad_steps is None:  # the check runs on the host
            return
        new = int(ep.bad_steps)
        if new:
            ep.bad_steps.zero_()
            loop.step -= new  # steps count updates, as when the host skips a batch
            where = f"{new} of steps {ep.first_unchecked}-{loop.step + new} (epoch {epoch + 1})"
            self._skip_or_stop(where, "loss or gradient norm (dropped on the device)", new, loop)
        ep.first_unchecked = loop.step + 1

    # --- the end of an epoch -----------------------------------------------------------------

    def _end_epoch(self, fit: _Fit, epoch: int, report: Reporter) -> bool:
        """The epoch's row in the history, best weights, checkpoint, logs; whether to stop early."""
        cfg, fabric, loop = self.cfg, self.fabric, fit.loop
        if cfg.precise_batch_norm is not None:
            self._recompute_batch_norm(fit, epoch)
        train_terms, val = self._epoch_terms(fit)
        row = self._epoch_row(fit, epoch, train_terms, {**val.terms, **val.scores})
        loop.history.append(row)
        improved = self._track_best(fit, epoch, *self._monitored(fit, train_terms, val))
        loop.epoch, loop.batch, loop.sums, loop.seconds, loop.cpu_seconds = epoch + 1, 0, {}, 0.0, 0.0
        self._save(fit)
        if fabric.is_global_zero:
            write_csv_rows(self.out_dir / "history.csv", loop.history)
        report.header(_terms_note(row))
        report.line(_epoch_line(row, cfg.epochs, improved and fit.val is not None, cfg.monitor))
        for k, v in row.items():
            if isinstance(v, float) and k.startswith(("train_", "val_")):
                fabric.log(f"epoch/{k}", v, step=loop.step)
        patience = cfg.early_stopping_patience
        if patience is not None and loop.bad_epochs >= patience:
            fit.stopped_early = True
            report.line(f"early stopping: no improvement for {plural(patience, 'epoch')}")
        return fit.stopped_early

    def _recompute_batch_norm(self, fit: _Fit, epoch: int) -> None:
        """``train.precise_batch_norm``: every batch norm's statistics recomputed at the epoch's final
        weights over the first batches of ``epoch`` (this rank's share of each; the ranks' means then
        averaged), under the training precision, the model called as in a training step."""
        fabric = self.fabric
        convert = fabric.strategy.precision.convert_input  # as a step's inputs (16-true, 64-true: cast)
        batches = fit.train.epoch(epoch, fabric.global_rank, fabric.world_size)
        with contextlib.closing(batches), fabric.autocast():  # type: ignore[type-var]
            layers = recompute_batch_norm(fit.raw, itertools.islice(batches, self.cfg.precise_batch_norm),
                                          lambda batch: call_model(fit.raw, convert(batch)))
        if fabric.world_size > 1:
            for m in layers:
                for stat in (m.running_mean, m.running_var):
                    stat.copy_(fabric.all_reduce(stat, reduce_op="mean"))

    def _epoch_terms(self, fit: _Fit) -> tuple[dict[str, float], Validation]:
        """The epoch's mean training loss terms (over all ranks) and its validation (empty without
        a validation split)."""
        fabric = self.fabric
        done = max(1, fit.batches - fit.loop.sums.get("__skipped__", 0.0))
        train_terms = {k: v / done for k, v in fit.loop.sums.items() if not k.startswith("__")}
        if fabric.world_size > 1:  # each rank saw its slice of every batch: report the global mean
            reduced = fabric.all_reduce(
                {k: torch.tensor(v, dtype=torch.float64, device=fabric.device)
                 for k, v in train_terms.items()},
                reduce_op="mean")
            train_terms = {k: float(v) for k, v in reduced.items()}
        return train_terms, self._validation(fit)

    def _validation(self, fit: _Fit) -> Validation:
        """The task's validation pass under the training precision's autocast, else the engine's
        mean loss terms (every rank sees all of the split: no communication)."""
        if fit.val is None:
            return Validation({})
        if fit.validate is None:
            return Validation(self._evaluate(fit.forward, fit.val))
        with torch.no_grad(), self.fabric.autocast():
            return fit.validate(fit.raw, fit.val)

    def _epoch_row(self, fit: _Fit, epoch: int, train_terms: dict[str, float],
                   val_terms: dict[str, float]) -> dict[str, Any]:
        """The epoch's line of ``history.csv``: loss terms, time, throughput, learning rate."""
        loop, train, world = fit.loop, fit.train, self.fabric.world_size
        seconds = loop.seconds
        fit.train_seconds += seconds
        images = train.shard_size(world) if not train.drop_last else fit.batches * train.batch_size
        images *= train.images_per_item  # clips of T frames: T images each
        row: dict[str, Any] = {"epoch": epoch + 1, "step": loop.step}
        row.update({f"train_{k}": v for k, v in train_terms.items()})
        row.update({f"val_{k}": v for k, v in val_terms.items()})
        row["train_seconds"] = round(seconds, 4)
        row["cpu_seconds"] = round(loop.cpu_seconds, 4)  # summed over a resumed run's epochs
        row["images_per_s"] = round(images * world / seconds, 1) if seconds > 0 else None
        row["data_wait_fraction"] = round(loop.sums.get("__wait__", 0.0) / seconds, 4) \
            if seconds > 0 else None
        row["lr"] = fit.optimizer.param_groups[0]["lr"]
        return row

    def _monitored(self, fit: _Fit, train_terms: dict[str, float], val: Validation
                   ) -> tuple[float | None, bool]:
        """The epoch's value of ``train.monitor`` and whether higher is better (scores) or lower
        (loss terms); without a validation split, the training loss."""
        name = self.cfg.monitor
        if fit.val is None:
            return train_terms.get("loss"), False
        if name in val.scores:
            return val.scores[name], True
        if name in val.terms:
            return val.terms[name], False
        raise ConfigError("train.monitor", name, "one of this run's validation loss terms "
                          f"({', '.join(val.terms)}) or scores ({', '.join(val.scores) or 'none'})")

    def _track_best(self, fit: _Fit, epoch: int, monitored: float | None, higher_is_better: bool) -> bool:
        """Whether ``monitored`` (see :meth:`_monitored`) improved; if so, keep and write the
        weights as the best."""
        loop = fit.loop
        improved = monitored is not None and math.isfinite(monitored) and (
            loop.best_val is None
            or (monitored > loop.best_val if higher_is_better else monitored < loop.best_val))
        if not improved:
            loop.bad_epochs += 1
            return False
        loop.best_val, loop.best_epoch, loop.bad_epochs = monitored, epoch + 1, 0
        fit.best_state = {k: v.detach().clone() for k, v in fit.raw.state_dict().items()}
        if self.fabric.is_global_zero:
            write_safetensors(self.ckpt_dir / BEST, fit.best_state)
        return True

    # --- non-finite losses -------------------------------------------------------------------

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

    # --- validation, the batch-size probe ----------------------------------------------------

    @torch.no_grad()
    def _evaluate(self, forward: Any, val: Batches) -> dict[str, float]:
        """Mean loss terms on the validation set (every rank sees all of it: no communication)."""
        forward.eval()
        terms = TermMeans()
        for xb in val.epoch(0):
            terms.add(call_model(forward, xb), batch_images(xb).shape[0])
        return terms.means()

    def _fit_batch_size(self, forward: Any, train: Batches) -> None:
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

    def _save(self, fit: _Fit) -> None:
        """Write ``last.ckpt``: everything a resume needs to continue exactly here."""
        if self.fabric.is_global_zero:
            save_checkpoint(
                self.ckpt_dir / LAST, model=fit.raw.state_dict(), optimizer=fit.optimizer.state_dict(),
                scheduler=fit.scheduler.state_dict() if fit.scheduler is not None else None,
                loop=fit.loop, rng=rng_state(), config=fit.run_config,
            )
        self.fabric.barrier()

    def _restore(self, path: Path, fit: _Fit,
                 upgrade_config: Callable[[dict[str, Any]], dict[str, Any]] | None) -> LoopState:
        ckpt = load_checkpoint(path)
        saved = ckpt.get("config") or {}
        if saved and upgrade_config is not None:
            # one not readable as a config of today is compared as written: the difference shows
            with contextlib.suppress(AevisionError, TypeError, ValueError):
                saved = upgrade_config(saved)
        diff = config_mismatch(saved, fit.run_config)
        if diff:
            raise AevisionError(f"{path}: cannot resume, the config changed ({diff}); "
                                f"use another output_dir for a new run")
        try:
            fit.raw.load_state_dict(ckpt["model"])
            fit.optimizer.load_state_dict(ckpt["optimizer"])
        except (RuntimeError, KeyError, ValueError) as e:
            first = str(e).splitlines()[0]
            raise AevisionError(f"{path}: checkpoint does not fit this model ({first})") from None
        if fit.scheduler is not None and ckpt.get("scheduler"):
            fit.scheduler.load_state_dict(ckpt["scheduler"])
            follow_plan(fit.scheduler, self.cfg.epochs * fit.batches)  # train.epochs may have grown
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


def _terms_note(row: dict[str, Any]) -> str:
    """What the epoch lines do not say: ``loss`` is weighted, the penalties after it are not."""
    terms = [k[6:] for k in row if k.startswith("train_") and k[6:] not in ("loss", "recon", "seconds")]
    if not terms:
        return ""
    verb = "is" if len(terms) == 1 else "are"
    return f"(loss is the weighted sum of the terms; {', '.join(terms)} {verb} shown unweighted)"


def _epoch_line(row: dict[str, Any], epochs: int, improved: bool, monitor: str = "loss") -> str:
    """One epoch's line: training terms, the validation loss and the monitored quantity (``*``:
    the best so far), time and speed."""
    train = {k[6:]: v for k, v in row.items() if k.startswith("train_") and k != "train_seconds"}
    val = {k[4:]: v for k, v in row.items() if k.startswith("val_")}
    speed = f"{row['images_per_s']:,.0f} img/s" if row.get("images_per_s") else ""
    mark = " *" if improved else ""
    parts = [f"epoch {row['epoch']}/{epochs}", format_terms("", train)]
    if val:
        shown = {"loss": val.get("loss", float("nan"))}
        if monitor in val:
            shown[monitor] = val[monitor]
        parts.append(format_terms("val_", shown) + mark)
    parts.append(f"{row['train_seconds']:.1f}s {speed}")
    return "  ".join(p for p in parts if p)
