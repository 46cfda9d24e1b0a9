"""The training engine: it learns, resumes exactly, and stops cleanly on a diverging loss."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch
from torch import nn

import aevision
from aevision.api import model_from_config
from aevision.config import TrainConfig
from aevision.data.batches import TensorBatches
from aevision.engine import Trainer
from aevision.engine.checkpoint import config_mismatch, load_checkpoint
from aevision.engine.loop import Validation, make_optimizer
from aevision.engine.schedule import lr_scheduler
from aevision.errors import AevisionError, ConfigError, DivergenceError
from aevision.io import read_safetensors
from aevision.models import build_model
from conftest import tiny_config


def test_training_lowers_the_loss_on_generated_data(tmp_path):
    cfg = tiny_config(tmp_path, data={"name": "shapes", "n_train": 256, "n_test": 0, "size": 16},
                      model={"name": "conv", "channels": [8, 16], "code_dim": 16},
                      train={"epochs": 20, "batch_size": 16, "lr": 3e-3, "progress": False})
    result = aevision.pretrain(cfg)
    untrained = model_from_config(result.config, result.data.train.image_shape).eval()
    with torch.no_grad():
        before = untrained(result.data.val.floats())["loss"].item()
    after = result.history[-1]["val_loss"]
    assert after < 0.6 * before
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0]
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "summary.json").is_file()
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert (tmp_path / "history.csv").read_text().count("\n") == 21
    metrics = list((tmp_path / "logs").rglob("metrics.csv"))
    assert metrics, "Fabric's CSV logger wrote nothing"


def _weights(folder):
    return read_safetensors(folder / "model.safetensors")


def test_a_channels_last_run_returns_the_model_its_saved_copy_reads_back_as(tmp_path):
    """Trained channels-last, the model comes back contiguous: features of the model in hand equal
    those of the same model loaded from its folder, to the bit (a benchmark that pretrains and one
    that reads the pretraining back must score alike)."""
    cfg = tiny_config(tmp_path, model={"name": "conv", "channels": [8, 16], "batch_norm": True},
                      train={"epochs": 1, "batch_size": 32, "progress": False, "channels_last": True})
    result = aevision.pretrain(cfg)
    convs = [p for p in result.model.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous() for p in convs)
    x = result.data.val.floats()
    with torch.no_grad():
        assert torch.equal(result.model.encode(x), aevision.load(tmp_path).encode(x))


def test_resume_continues_from_the_saved_step_and_matches_an_uninterrupted_run(tmp_path):
    regs = [{"name": "denoising", "sigma": 0.2}, {"name": "contractive", "method": "jvp"}]
    full = tiny_config(tmp_path / "full", regularizers=regs,
                       train={"epochs": 4, "batch_size": 32, "progress": False, "deterministic": True})
    aevision.pretrain(full)
    part = tiny_config(tmp_path / "part", regularizers=regs,
                       train={"epochs": 2, "batch_size": 32, "progress": False, "deterministic": True})
    first = aevision.pretrain(part)
    part["train"]["epochs"] = 4
    second = aevision.pretrain(part, resume=True)
    assert second.fit.resumed_from.endswith("last.ckpt")
    assert [h["epoch"] for h in second.history] == [1, 2, 3, 4]
    assert second.history[2]["step"] == first.history[-1]["step"] * 3 // 2
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "part")
    assert all(torch.equal(a[k], b[k]) for k in a)


class Normed(nn.Module):
    """A batch norm over 4 features, then a linear output (the loss: its mean square)."""

    def __init__(self):
        super().__init__()
        self.bn, self.lin = nn.BatchNorm1d(4), nn.Linear(4, 1)

    def forward(self, x):
        return {"loss": self.lin(self.bn(x)).pow(2).mean()}


@pytest.mark.parametrize("momentum, kept", [(1.0, 1.0), (0.5, 0.5), (None, 0.1)])
def test_batch_norm_momentum_holds_while_training_and_each_layer_gets_its_own_back(tmp_path, momentum, kept):
    """One full-batch step from zero running means: the running mean is ``momentum`` x the batch's
    mean (PyTorch's 0.1 unset); afterwards the layer has its own momentum again."""
    x = torch.randn(32, 4) * 3 + 5
    model = Normed()
    cfg = TrainConfig(epochs=1, batch_size=32, progress=False, accelerator="cpu",
                      batch_norm_momentum=momentum)
    Trainer(cfg, tmp_path).fit(model, TensorBatches(x, 32, seed=0), None)
    assert torch.allclose(model.bn.running_mean, kept * x.mean(0), atol=1e-5)
    assert model.bn.momentum == 0.1


@pytest.mark.parametrize("momentum", [0.0, -0.1, 1.5])
def test_batch_norm_momentum_outside_0_to_1_is_refused(momentum):
    with pytest.raises(ConfigError, match=r"train.batch_norm_momentum.*\(0, 1\]"):
        TrainConfig(batch_norm_momentum=momentum).validate()


class ProjectedNorm(nn.Module):
    """A linear map the run trains, then a batch norm over its output: the norm's statistics
    depend on the weights."""

    def __init__(self):
        super().__init__()
        self.proj, self.bn = nn.Linear(4, 4), nn.BatchNorm1d(4)

    def forward(self, x):
        return {"loss": (self.bn(self.proj(x)) - x).pow(2).mean()}


@pytest.mark.parametrize("batches", [4, 100])
def test_precise_batch_norm_gives_the_statistics_of_the_final_weights(tmp_path, batches):
    """After the run, the norm's running mean and variance are those of ``proj(x)`` at the weights
    the run ended with (4 equal batches: the mean of their means, their unbiased variances), not
    an average over the weights it passed through; 100 batches asks for more than an epoch has."""
    torch.manual_seed(0)
    x = torch.randn(32, 4) * 3 + 5
    model = ProjectedNorm()
    cfg = TrainConfig(epochs=3, batch_size=8, lr=0.05, optimizer="sgd", progress=False, accelerator="cpu",
                      loggers=[], precise_batch_norm=batches)
    Trainer(cfg, tmp_path).fit(model, TensorBatches(x, 8, seed=0), None)
    with torch.no_grad():
        h = model.proj(x)
    assert torch.allclose(model.bn.running_mean, h.mean(0), atol=1e-4)  # 4 equal batches: any order
    order = TensorBatches(x, 8, seed=0).indices(2)  # the last epoch's: its batches' variances
    parts = model.proj(x[order]).detach().view(4, 8, 4)
    assert torch.allclose(model.bn.running_var, parts.var(1).mean(0), rtol=1e-4)
    assert model.bn.momentum == 0.1 and model.training


def test_without_precise_batch_norm_the_averages_lag_the_weights(tmp_path):
    """The control for the test above: the same run without it keeps PyTorch's running averages,
    which are not the final weights' statistics."""
    torch.manual_seed(0)
    x = torch.randn(32, 4) * 3 + 5
    model = ProjectedNorm()
    cfg = TrainConfig(epochs=3, batch_size=8, lr=0.05, optimizer="sgd", progress=False, accelerator="cpu",
                      loggers=[])
    Trainer(cfg, tmp_path).fit(model, TensorBatches(x, 8, seed=0), None)
    with torch.no_grad():
        assert not torch.allclose(model.bn.running_mean, model.proj(x).mean(0), atol=1e-2)


class PartlyFrozen(ProjectedNorm):
    """A pretrained norm kept in eval mode (as Freezable models keep a frozen encoder) before the
    trained one."""

    def __init__(self):
        super().__init__()
        self.frozen = nn.BatchNorm1d(4)
        self.frozen.running_mean.fill_(5.0)
        self.frozen.running_var.fill_(9.0)

    def train(self, mode=True):
        super().train(mode)
        self.frozen.eval()
        return self

    def forward(self, x):
        return super().forward(self.frozen(x))


def test_precise_batch_norm_leaves_a_frozen_norm_its_statistics(tmp_path):
    model = PartlyFrozen()
    cfg = TrainConfig(epochs=1, batch_size=8, progress=False, accelerator="cpu", loggers=[],
                      precise_batch_norm=4)
    Trainer(cfg, tmp_path).fit(model, TensorBatches(torch.randn(32, 4) * 3 + 5, 8, seed=0), None)
    assert torch.equal(model.frozen.running_mean, torch.full((4,), 5.0))
    assert torch.equal(model.frozen.running_var, torch.full((4,), 9.0))
    assert int(model.bn.num_batches_tracked) == 4  # the trained one: recomputed over 4 batches


@pytest.mark.parametrize("precision", ["64-true", "bf16-true", "bf16-mixed"])
def test_precise_batch_norm_feeds_the_batches_as_a_step_does_at_every_precision(tmp_path, precision):
    """The inputs are cast as a training step's are (64-true, bf16-true: the model's dtype)."""
    model = ProjectedNorm()
    cfg = TrainConfig(epochs=1, batch_size=8, progress=False, accelerator="cpu", loggers=[],
                      precision=precision, precise_batch_norm=2)
    Trainer(cfg, tmp_path).fit(model, TensorBatches(torch.randn(32, 4), 8, seed=0), None)
    assert torch.isfinite(model.bn.running_mean).all() and int(model.bn.num_batches_tracked) == 2


@pytest.mark.parametrize("batches", [0, -1])
def test_precise_batch_norm_needs_a_batch(batches):
    with pytest.raises(ConfigError, match=r"train.precise_batch_norm.*integer >= 1"):
        TrainConfig(precise_batch_norm=batches).validate()


def test_resume_says_once_where_it_continues_from(tmp_path, caplog):
    from aevision.cli import main

    out = tmp_path / "run"
    flags = ["pretrain", "--dataset", "digits", "--limit", "100", "--model", "dense", "--batch-size", "30",
             "--no-progress", "model.code_dim=4", "-o", str(out)]
    assert main([*flags, "--epochs", "1"]) == 0
    assert "resumed" not in caplog.text
    caplog.clear()
    with caplog.at_level("INFO", logger="aevision"):
        assert main([*flags, "--epochs", "2", "--resume"]) == 0
    said = [r.getMessage() for r in caplog.records if "resumed" in r.getMessage()]
    assert said == [f"resumed from epoch 1, step 2: {out / 'checkpoints' / 'last.ckpt'}"]


def test_mid_epoch_checkpoints_resume_exactly(tmp_path):
    cfg = tiny_config(tmp_path / "a", train={"epochs": 2, "batch_size": 16, "progress": False,
                                             "deterministic": True})
    aevision.pretrain(cfg)
    cfg_b = tiny_config(tmp_path / "b", train={"epochs": 2, "batch_size": 16, "progress": False,
                                               "deterministic": True, "checkpoint_every_n_steps": 5})
    aevision.pretrain(cfg_b)
    ckpt = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.ckpt")
    assert ckpt["loop"].epoch == 2
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_a_changed_config(tmp_path):
    cfg = tiny_config(tmp_path, train={"epochs": 1, "progress": False})
    aevision.pretrain(cfg)
    cfg["model"]["code_dim"] = 8
    with pytest.raises(AevisionError, match=r"cannot resume, the config changed \(model.code_dim"):
        aevision.pretrain(cfg, resume=True)


def test_resume_accepts_a_checkpoint_written_before_an_option_existed(tmp_path):
    """An upgrade between a kill and ``--resume`` adds config fields whose defaults keep the old
    behaviour: the checkpoint's config lacks them, and that is not a change of config."""
    cfg = tiny_config(tmp_path, train={"epochs": 1, "progress": False})
    aevision.pretrain(cfg)
    path = tmp_path / "checkpoints" / "last.ckpt"

    def written_before_the_options():
        ckpt = torch.load(path, weights_only=True)
        del ckpt["config"]["train"]["warmup_steps"], ckpt["config"]["data"]["clip_stride"]
        torch.save(ckpt, path)

    written_before_the_options()
    cfg["train"]["epochs"] = 2
    cfg["train"]["momentum"] = 0.9  # added since: at its neutral value, no change either
    cfg["train"]["batch_norm_momentum"] = None
    cfg["train"]["precise_batch_norm"] = None
    assert aevision.pretrain(cfg, resume=True).fit.resumed_from.endswith("last.ckpt")
    written_before_the_options()
    cfg["train"]["warmup_steps"] = 3  # a new option set to something else is a change
    with pytest.raises(AevisionError, match=r"config changed \(train.warmup_steps: 0 in the checkpoint vs 3"):
        aevision.pretrain(cfg, resume=True)


def test_sgd_takes_its_momentum_and_nesterov_and_other_optimizers_refuse_them():
    params = [nn.Parameter(torch.zeros(2))]
    sgd = make_optimizer(TrainConfig(optimizer="sgd", lr=0.5, momentum=0.85, nesterov=True), params)
    assert isinstance(sgd, torch.optim.SGD)
    group = sgd.param_groups[0]
    assert (group["momentum"], group["nesterov"], group["lr"]) == (0.85, True, 0.5)
    assert make_optimizer(TrainConfig(optimizer="sgd"), params).param_groups[0]["momentum"] == 0.9
    with pytest.raises(AevisionError, match=r"train\.nesterov: got True, expected false \(unset\): "
                                            r"sgd's setting, and this run's optimizer is adamw"):
        TrainConfig(optimizer="adamw", nesterov=True).validate()
    with pytest.raises(AevisionError, match=r"train\.momentum: got 0\.5, expected 0\.9 \(unset\)"):
        TrainConfig(momentum=0.5).validate()
    with pytest.raises(AevisionError, match=r"train\.nesterov: got True, expected false when momentum is 0"):
        TrainConfig(optimizer="sgd", momentum=0.0, nesterov=True).validate()
    with pytest.raises(AevisionError, match=r"train\.momentum: got 1\.0, expected a number in \[0, 1\)"):
        TrainConfig(optimizer="sgd", momentum=1.0).validate()


def test_a_fine_tune_checkpoint_from_before_head_lr_scale_resumes_unless_it_is_set():
    saved = {"encoder_lr_scale": 0.1, "train": {"lr": 0.1}}  # a fine-tune's config, written before
    assert config_mismatch(saved, {**saved, "head_lr_scale": 1.0}) is None
    assert config_mismatch(saved, {**saved, "head_lr_scale": 0.5}) == (
        "head_lr_scale: None in the checkpoint vs 0.5 now")


class Exploding(nn.Module):
    """Returns a finite loss until call ``at``, then NaN in the 'recon' term."""

    def __init__(self, at: int):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.calls, self.at = 0, at

    def forward(self, x):
        self.calls += 1
        recon = (self.lin(x.flatten(1)) - x.flatten(1)).pow(2).mean()
        if self.training and self.calls >= self.at:
            recon = recon * float("nan")
        return {"loss": recon, "recon": recon}


def _batches():
    return TensorBatches(torch.randint(0, 255, (64, 1, 2, 2), dtype=torch.uint8), 8, seed=0)


def test_nonfinite_loss_stops_with_step_and_term(tmp_path):
    trainer = Trainer(TrainConfig(epochs=3, progress=False, accelerator="cpu"), tmp_path)
    with pytest.raises(DivergenceError) as e:
        trainer.fit(Exploding(at=11), _batches(), None)
    msg = str(e.value)
    assert "step 11 (epoch 2, batch 3)" in msg and "recon=nan" in msg
    assert "last good checkpoint" in msg
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert ckpt["loop"].epoch == 1  # the epoch-1 checkpoint survives, untouched
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())


def test_skip_nonfinite_skips_a_bounded_number_of_batches(tmp_path):
    cfg = TrainConfig(epochs=1, progress=False, accelerator="cpu", skip_nonfinite=True, max_bad_batches=3)
    with pytest.raises(DivergenceError, match="step 5"):
        Trainer(cfg, tmp_path / "a").fit(Exploding(at=5), _batches(), None)

    class Glitch(Exploding):
        def forward(self, x):
            out = super().forward(x)
            if self.calls == 4:
                return out
            return {k: v.nan_to_num(0.1) for k, v in out.items()}

    cfg = TrainConfig(epochs=1, progress=False, accelerator="cpu", skip_nonfinite=True)
    result = Trainer(cfg, tmp_path / "b").fit(Glitch(at=4), _batches(), None)
    assert result.bad_batches == 1 and result.steps == 7


class InfiniteGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("inf")


class Overflowing(Exploding):
    """A finite loss whose gradient overflows on call ``at`` only (as a bf16 spike does)."""

    def forward(self, x):
        self.calls += 1
        out = self.lin(x.flatten(1))
        if self.calls == self.at:
            out = InfiniteGradient.apply(out)
        recon = (out - x.flatten(1)).pow(2).mean()
        assert torch.isfinite(recon)
        return {"loss": recon, "recon": recon}


def test_a_finite_loss_with_an_overflowing_gradient_never_reaches_the_optimizer(tmp_path):
    # without the check, Adam's second moments would hold inf and freeze the weights silently
    cfg = TrainConfig(epochs=1, progress=False, accelerator="cpu", gradient_clip_norm=1.0)
    with pytest.raises(DivergenceError, match=r"step 3 .*non-finite gradient norm grad_norm=(inf|nan)"):
        Trainer(cfg, tmp_path / "a").fit(Overflowing(at=3), _batches(), None)

    model = Overflowing(at=3)
    cfg = TrainConfig(epochs=1, progress=False, accelerator="cpu", gradient_clip_norm=1.0,
                      skip_nonfinite=True)
    result = Trainer(cfg, tmp_path / "b").fit(model, _batches(), None)
    assert result.bad_batches == 1 and result.steps == 7
    assert all(torch.isfinite(p).all() for p in model.parameters())


class Glitch(Exploding):
    """NaN loss on call ``at`` only; finite loss and gradients on every other."""

    def forward(self, x):
        self.calls += 1
        recon = (self.lin(x.flatten(1)) - x.flatten(1)).pow(2).mean()
        if self.calls == self.at:
            recon = recon * float("nan")
        return {"loss": recon, "recon": recon}


@pytest.fixture
def deferred(monkeypatch):
    """The on-device NaN guard of GPUs (fused Adam's found_inf), forced on the CPU."""
    import aevision.engine.loop as loop

    seen = []
    monkeypatch.setattr(loop, "defers_nonfinite_check", lambda *a: seen.append(True) or True)
    return seen


@pytest.mark.parametrize("make, clip", [(lambda: Glitch(at=4), None), (lambda: Overflowing(at=3), 1.0)])
def test_the_on_device_guard_drops_the_same_steps_as_the_per_step_check(tmp_path, monkeypatch, make,
                                                                         clip):
    """Bad loss or overflowing gradient, skipped: same weights, epoch means and counts both ways."""
    cfg = TrainConfig(epochs=2, progress=False, accelerator="cpu", skip_nonfinite=True,
                      gradient_clip_norm=clip)
    torch.manual_seed(0)
    host_model = make()
    host = Trainer(cfg, tmp_path / "host").fit(host_model, _batches(), None)
    import aevision.engine.loop as loop

    monkeypatch.setattr(loop, "defers_nonfinite_check", lambda *a: True)
    torch.manual_seed(0)
    device_model = make()
    on_device = Trainer(cfg, tmp_path / "device").fit(device_model, _batches(), None)
    assert on_device.bad_batches == host.bad_batches == 1
    assert on_device.steps == host.steps == 15
    for a, b in zip(host.history, on_device.history, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6)
    for p, q in zip(host_model.parameters(), device_model.parameters(), strict=True):
        assert torch.isfinite(p).all()
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_the_on_device_guard_stops_a_diverged_run_with_the_weights_untouched(tmp_path, deferred):
    trainer = Trainer(TrainConfig(epochs=3, progress=False, accelerator="cpu"), tmp_path / "a")
    model = Exploding(at=11)
    with pytest.raises(DivergenceError, match=r"6 of steps 9-16 \(epoch 2\): non-finite loss or "
                                              r"gradient norm.*last good checkpoint"):
        trainer.fit(model, _batches(), None)
    assert deferred  # the on-device path ran
    assert all(torch.isfinite(p).all() for p in model.parameters())  # bad steps never applied
    ckpt = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.ckpt")
    assert ckpt["loop"].epoch == 1
    cfg = TrainConfig(epochs=1, progress=False, accelerator="cpu", skip_nonfinite=True,
                      max_bad_batches=3)
    with pytest.raises(DivergenceError, match="4 of steps 1-8"):  # 4 bad > 3 allowed
        Trainer(cfg, tmp_path / "b").fit(Exploding(at=5), _batches(), None)


def test_the_on_device_guard_is_for_single_gpu_fused_adam_outside_16_bit():
    from aevision.engine.loop import defers_nonfinite_check

    p = [nn.Parameter(torch.zeros(2))]
    fused, plain = torch.optim.Adam(p, fused=True), torch.optim.Adam(p)
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert defers_nonfinite_check(cuda, 1, fused, "bf16-mixed")
    assert defers_nonfinite_check(cuda, 1, torch.optim.AdamW(p, fused=True), "32-true")
    assert not defers_nonfinite_check(cpu, 1, fused, "32-true")  # a host check costs nothing there
    assert not defers_nonfinite_check(cuda, 2, fused, "32-true")
    assert not defers_nonfinite_check(cuda, 1, plain, "32-true")
    assert not defers_nonfinite_check(cuda, 1, torch.optim.SGD(p, lr=0.1), "32-true")
    assert not defers_nonfinite_check(cuda, 1, fused, "16-mixed")


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_direct_calls_train_exactly_as_fabrics_wrappers(tmp_path, monkeypatch, precision):
    """The hot loop's direct calls (one device) change nothing: same history and weights as with
    Fabric's module and optimizer wrappers, LR schedule and validation included."""
    from aevision.engine import loop
    from aevision.models import build_model

    def run(folder, direct):
        monkeypatch.setattr(loop.DirectForward, "applies", staticmethod(lambda *a: direct))
        torch.manual_seed(0)
        model = build_model("conv", (3, 8, 8), {"channels": [4, 8], "code_dim": 6},
                            [{"name": "l1", "weight": 1e-3}])
        images = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
        cfg = TrainConfig(epochs=2, progress=False, accelerator="cpu", precision=precision,
                          scheduler="cosine", warmup_steps=2)
        result = Trainer(cfg, folder).fit(model, TensorBatches(images[:48], 16, seed=0),
                                          TensorBatches(images[48:], 16, shuffle=False))
        return model, result

    direct_model, direct = run(tmp_path / "direct", True)
    wrapped_model, wrapped = run(tmp_path / "wrapped", False)
    keys = [k for k in direct.history[0] if k.startswith(("train_", "val_", "lr")) and k != "train_seconds"]
    assert [[h[k] for k in keys] for h in direct.history] == [[h[k] for k in keys] for h in wrapped.history]
    for p, q in zip(direct_model.parameters(), wrapped_model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_direct_calls_are_for_one_device_without_loss_scaling_or_input_casts():
    from aevision.engine.loop import DirectForward, make_fabric

    assert DirectForward.applies(make_fabric(TrainConfig(accelerator="cpu")), "32-true")
    assert DirectForward.applies(make_fabric(TrainConfig(accelerator="cpu")), "bf16-mixed")
    assert not DirectForward.applies(make_fabric(TrainConfig(accelerator="cpu")), "bf16-true")
    assert not DirectForward.applies(make_fabric(TrainConfig(accelerator="cpu")), "16-mixed")
    ddp = make_fabric(TrainConfig(accelerator="cpu", devices=2, strategy="ddp"))
    assert not DirectForward.applies(ddp, "32-true")


class PicksyClassifier(nn.Module):
    """``model(x, y)`` as in fine-tuning; CUDA-style out of memory for batches over ``fits``."""

    def __init__(self, fits: int):
        super().__init__()
        self.head = nn.Linear(4, 3)
        self.fits = fits

    def forward(self, x, y):
        if x.shape[0] > self.fits:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        loss = nn.functional.cross_entropy(self.head(x.flatten(1)), y)
        return {"loss": loss, "ce": loss}


@pytest.mark.parametrize("direct", [True, False])
def test_auto_batch_size_probes_batches_with_targets_as_the_loop_calls_them(tmp_path, monkeypatch,
                                                                           caplog, direct):
    """Batches of (images, labels): the probe calls ``model(x, y)``, as every training step does."""
    from aevision.engine import loop

    monkeypatch.setattr(loop.DirectForward, "applies", staticmethod(lambda *a: direct))
    images = torch.randint(0, 255, (200, 1, 2, 2), dtype=torch.uint8)
    data = TensorBatches(images, 64, seed=0, targets=torch.arange(200) % 3)
    cfg = TrainConfig(epochs=1, progress=False, accelerator="cpu", auto_batch_size=True)
    result = Trainer(cfg, tmp_path).fit(PicksyClassifier(fits=20), data, None)
    assert data.batch_size == 16 and result.steps == 13
    assert "train.batch_size 64 does not fit in memory; using 16" in caplog.text


def test_auto_batch_size_schedules_the_steps_of_the_batch_size_it_picked(tmp_path):
    """A cosine run whose batch size was halved twice reaches lr 0 at its last step (it took 4x the
    steps planned for the batch size asked: the cosine would end midway and climb back up)."""
    images = torch.randint(0, 255, (200, 1, 2, 2), dtype=torch.uint8)
    data = TensorBatches(images, 64, seed=0, targets=torch.arange(200) % 3)
    cfg = TrainConfig(epochs=2, progress=False, accelerator="cpu", auto_batch_size=True, scheduler="cosine")
    result = Trainer(cfg, tmp_path).fit(PicksyClassifier(fits=20), data, None)
    assert data.batch_size == 16 and result.steps == 26
    assert [h["lr"] for h in result.history] == pytest.approx([1e-3 / 2, 0.0])


class Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_a_checkpoint_with_a_malicious_pickle_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "last.ckpt"
    torch.save({"format": 1, "model": {}, "payload": Evil()}, path)
    with pytest.raises(AevisionError, match="refused to load checkpoint"):
        load_checkpoint(path)
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_follows_the_single_process_loss_curve(tmp_path):
    """--devices 2 --strategy ddp (gloo) with batch 16 per rank == one process with batch 32."""
    import json
    import subprocess
    import sys

    base = [sys.executable, "-m", "aevision", "pretrain", "--dataset", "digits", "--model", "dense",
            "--limit", "640", "--epochs", "3", "--no-progress", "--accelerator", "cpu",
            "model.code_dim=16", "--lr", "3e-3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([*base, "--batch-size", "32", "-o", str(tmp_path / "one")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([*base, "--batch-size", "16", "--devices", "2", "--strategy", "ddp",
                          "-o", str(tmp_path / "two")], capture_output=True, text=True, env=env,
                         timeout=600)
    assert two.returncode == 0, two.stderr

    def history(name):
        return json.loads((tmp_path / name / "summary.json").read_text())["fit"]["history"]

    h1, h2 = history("one"), history("two")
    assert [h["step"] for h in h1] == [h["step"] for h in h2]
    for a, b in zip(h1, h2, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-4)
    w1, w2 = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    assert all(torch.allclose(w1[k], w2[k], atol=1e-5) for k in w1)


def _lrs(cfg: TrainConfig, total: int) -> list[float]:
    opt = torch.optim.Adam([nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    sched = lr_scheduler(opt, cfg, total)
    lrs = []
    for _ in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        if sched is not None:
            sched.step()
    return lrs


def test_warmup_rises_linearly_then_the_scheduler_decays():
    warm_cos = _lrs(TrainConfig(lr=0.1, warmup_steps=4, scheduler="cosine"), 12)
    assert warm_cos[:4] == pytest.approx([0.025, 0.05, 0.075, 0.1])
    # the cosine spans the 8 steps after the warmup, from lr down toward zero
    assert warm_cos[4:] == pytest.approx([0.05 * (1 + math.cos(math.pi * i / 8)) for i in range(8)])
    assert _lrs(TrainConfig(lr=0.1, warmup_steps=4), 8) == pytest.approx([0.025, 0.05, 0.075] + [0.1] * 5)
    # a warmup longer than the run ends where the run does
    assert _lrs(TrainConfig(lr=0.1, warmup_steps=50), 5) == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1])
    # without warmup: torch's own cosine (old runs reproduce), or a constant rate
    assert _lrs(TrainConfig(lr=0.1, scheduler="cosine"), 4) == pytest.approx(
        [0.05 * (1 + math.cos(math.pi * i / 4)) for i in range(4)])
    assert _lrs(TrainConfig(lr=0.1), 3) == [0.1] * 3
    # linear: after the warmup a straight line to zero (the triangle), or from lr without one
    assert _lrs(TrainConfig(lr=0.1, warmup_steps=2, scheduler="linear"), 6) == pytest.approx(
        [0.05, 0.1, 0.1, 0.075, 0.05, 0.025])
    assert _lrs(TrainConfig(lr=0.1, scheduler="linear"), 4) == pytest.approx([0.1, 0.075, 0.05, 0.025])
    with pytest.raises(AevisionError, match=r"train\.warmup_steps"):
        TrainConfig(warmup_steps=-1).validate()


def test_a_warmup_run_killed_mid_warmup_resumes_exactly(tmp_path, monkeypatch):
    train = {"batch_size": 32, "progress": False, "deterministic": True, "lr": 3e-3,
             "scheduler": "cosine", "warmup_steps": 12, "epochs": 3}  # 270 images: 8 steps an epoch
    history = aevision.pretrain(tiny_config(tmp_path / "full", train=train)).history
    # the lr column: the rate the next step will take, still rising after epoch 1's 8 steps
    assert history[0]["step"] == 8 and history[0]["lr"] == pytest.approx(3e-3 * 9 / 12)
    assert history[1]["lr"] < 3e-3 and history[2]["lr"] == pytest.approx(0.0, abs=1e-12)

    epochs_started = []
    real_epoch = Trainer._train_epoch

    def killed_in_epoch_2(self, *args, **kwargs):
        epochs_started.append(1)
        if len(epochs_started) == 2:
            raise KeyboardInterrupt
        return real_epoch(self, *args, **kwargs)

    part = tiny_config(tmp_path / "part", train=train)
    monkeypatch.setattr(Trainer, "_train_epoch", killed_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        aevision.pretrain(part)
    monkeypatch.undo()
    resumed = aevision.pretrain(part, resume=True)
    assert resumed.fit.resumed_from.endswith("last.ckpt")
    assert [h["lr"] for h in resumed.history] == pytest.approx([h["lr"] for h in history])
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "part")
    assert all(torch.equal(a[k], b[k]) for k in a)


# --- train.monitor: which epoch's weights are kept ------------------------------------------------


class Scripted:
    """A task's ``validate``: the model's mean loss terms on the validation batches, and the next of
    ``values`` as ``score``; keeps a copy of the weights it scored, so that a test can say which
    epoch's weights the run kept."""

    def __init__(self, *values: float):
        self.values, self.weights = list(values), []

    def __call__(self, model, val):
        self.weights.append({k: v.clone() for k, v in model.state_dict().items()})
        outputs = [(len(x), model(x)) for x in val.epoch(0)]
        images = sum(n for n, _ in outputs)
        mean = {k: sum(float(t[k]) * n for n, t in outputs) / images for k in outputs[0][1]}
        return Validation(mean, {"score": self.values[len(self.weights) - 1]})


def _monitored_fit(tmp_path, scores, resume=False, **train):
    cfg = TrainConfig(**{"epochs": 3, "progress": False, "accelerator": "cpu", **train})
    torch.manual_seed(0)
    model = Exploding(at=10**9)  # a linear autoencoder whose loss only falls
    val = TensorBatches(torch.randint(0, 255, (16, 1, 2, 2), dtype=torch.uint8), 8, shuffle=False)
    fit = Trainer(cfg, tmp_path).fit(model, _batches(), val, resume=resume, validate=scores)
    return fit, model


def test_monitor_keeps_the_epoch_with_the_best_score_not_the_lowest_loss(tmp_path):
    scores = Scripted(0.2, 0.9, 0.5)
    fit, model = _monitored_fit(tmp_path / "score", scores, monitor="score")
    assert [r["val_score"] for r in fit.history] == [0.2, 0.9, 0.5]  # every epoch's score recorded
    assert fit.history[2]["val_loss"] < fit.history[1]["val_loss"]  # the loss alone would keep epoch 3
    assert (fit.best_epoch, fit.monitored, fit.best_monitored) == (2, "val_score", 0.9)
    assert fit.best_val_loss == fit.history[1]["val_loss"]  # the loss of the epoch kept
    kept = model.state_dict()
    assert all(torch.equal(kept[k], v) for k, v in scores.weights[1].items())
    best = read_safetensors(tmp_path / "score" / "checkpoints" / "best.safetensors")
    assert all(torch.equal(best[k], v) for k, v in scores.weights[1].items())

    by_loss, _ = _monitored_fit(tmp_path / "loss", Scripted(0.2, 0.9, 0.5))  # the default: loss
    assert (by_loss.best_epoch, by_loss.monitored) == (3, "val_loss")
    assert by_loss.best_monitored == by_loss.best_val_loss == by_loss.history[2]["val_loss"]


def test_a_tasks_validation_replaces_the_engines_loss_pass(tmp_path, monkeypatch):
    """One pass over the validation split per epoch: the task's (its terms are what is recorded),
    not the engine's loss pass and then the task's."""
    engine_passes = []
    real = Trainer._evaluate
    monkeypatch.setattr(Trainer, "_evaluate", lambda self, *a: engine_passes.append(1) or real(self, *a))
    fit, _ = _monitored_fit(tmp_path / "task", Scripted(0.2, 0.9, 0.5), monitor="score")
    assert engine_passes == [] and all(r["val_loss"] > 0 for r in fit.history)
    engine, _ = _monitored_fit(tmp_path / "engine", None)
    assert len(engine_passes) == 3  # the same run without a task's pass: the engine's, each epoch
    assert [r["val_loss"] for r in engine.history] == pytest.approx([r["val_loss"] for r in fit.history])


def test_early_stopping_watches_the_monitored_score(tmp_path):
    fit, _ = _monitored_fit(tmp_path, Scripted(0.5, 0.4, 0.3, 0.9), monitor="score", epochs=4,
                            early_stopping_patience=2)
    assert fit.stopped_early and len(fit.history) == 3 and fit.best_epoch == 1


def test_the_best_score_survives_a_resume(tmp_path):
    first, _ = _monitored_fit(tmp_path, Scripted(0.9, 0.1), monitor="score", epochs=2)
    assert first.best_epoch == 1
    again, model = _monitored_fit(tmp_path, Scripted(0.5), resume=True, monitor="score", epochs=3)
    assert again.resumed_from and again.best_epoch == 1 and again.best_monitored == 0.9
    assert all(torch.equal(model.state_dict()[k], v)
               for k, v in read_safetensors(tmp_path / "checkpoints" / "best.safetensors").items())


def test_a_monitor_the_run_does_not_have_names_what_it_has(tmp_path):
    with pytest.raises(ConfigError, match=r"train.monitor: got 'accuracy', expected one of this run's "
                                          r"validation loss terms \(loss, recon\) or scores \(score\)"):
        _monitored_fit(tmp_path, Scripted(0.5), monitor="accuracy")
    with pytest.raises(ConfigError, match=r"train.monitor: got 'val loss'"):
        TrainConfig(monitor="val loss").validate()


def test_without_validation_a_monitored_score_is_said_to_be_unused(tmp_path, caplog):
    cfg = TrainConfig(epochs=1, progress=False, accelerator="cpu", monitor="miou")
    with caplog.at_level("INFO", logger="aevision.engine.loop"):
        fit = Trainer(cfg, tmp_path).fit(Exploding(at=10**9), _batches(), None)
    assert "train.monitor miou: no validation split, so the last epoch's weights are kept" in caplog.text
    assert fit.monitored == "train_loss"


def test_without_validation_the_epoch_reported_is_the_one_whose_weights_are_kept(tmp_path):
    """best_epoch named the lowest training loss (epoch 3 of 6 here, a rate too high to settle)
    while model.safetensors held epoch 6."""
    train = {"epochs": 6, "lr": 1.0, "batch_size": 128, "progress": False}
    data = {"name": "digits", "val_fraction": 0}
    result = aevision.pretrain(tiny_config(tmp_path, data=data, train=train))
    losses = [h["train_loss"] for h in result.fit.history]
    assert losses.index(min(losses)) != 5  # the lowest training loss is not the last epoch's
    summary = json.loads((tmp_path / "summary.json").read_text())["fit"]
    assert result.fit.best_epoch == summary["best_epoch"] == 6
    assert result.fit.best_val_loss == result.fit.best_monitored == losses[-1]
    saved = aevision.load(tmp_path).state_dict()
    assert all(torch.equal(saved[k], v) for k, v in result.model.state_dict().items())


@pytest.mark.parametrize("device, gpus, unset", [("cpu", 0, True), ("cpu", 1, False), ("cuda", 0, False)])
def test_cpu_training_without_a_gpu_stops_the_per_step_gpu_probe(monkeypatch, device, gpus, unset):
    """Lightning's PYTORCH_NVML_BASED_CUDA_CHECK=1 makes every Adam step look for a GPU; it goes
    only where there is no GPU to find (nothing to initialise, nothing to poison)."""
    from aevision.engine.gpu_probe import NVML_CHECK, drop_gpu_probe

    monkeypatch.setenv(NVML_CHECK, "1")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    assert drop_gpu_probe(torch.device(device)) is unset
    assert (NVML_CHECK not in os.environ) is unset


def test_the_trainer_drops_the_gpu_probe_on_a_cpu_only_machine(tmp_path, monkeypatch):
    from aevision.engine.gpu_probe import NVML_CHECK

    monkeypatch.setenv(NVML_CHECK, "1")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    cfg = TrainConfig(epochs=1, batch_size=8, progress=False, accelerator="cpu")
    images = torch.randint(0, 256, (16, 1, 4, 4), dtype=torch.uint8)
    model = build_model("dense", (1, 4, 4), {"hidden": [8], "code_dim": 4})
    Trainer(cfg, tmp_path).fit(model, TensorBatches(images, 8), None)
    assert NVML_CHECK not in os.environ


def test_a_cosine_run_resumed_with_more_epochs_decays_over_the_new_total(tmp_path):
    """The restored scheduler kept the old T_max: past it the rate climbed back to its maximum."""
    train = {"epochs": 2, "batch_size": 32, "progress": False, "scheduler": "cosine"}
    aevision.pretrain(tiny_config(tmp_path / "a", train=train))
    longer = {**train, "epochs": 4}
    resumed = aevision.pretrain(tiny_config(tmp_path / "a", train=longer), resume=True)
    fresh = aevision.pretrain(tiny_config(tmp_path / "b", train=longer))
    lrs = [h["lr"] for h in resumed.fit.history]
    assert len(lrs) == 4 and lrs[2:] == pytest.approx([h["lr"] for h in fresh.fit.history][2:], abs=1e-9)
    assert lrs[3] < lrs[2] and lrs[3] == pytest.approx(0.0, abs=1e-9)
