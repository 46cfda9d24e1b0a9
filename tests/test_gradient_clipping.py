"""``train.gradient_clip_norm``: every optimizer step sees gradients of at most that norm."""

from __future__ import annotations

import pytest
import torch

from aevision.config import TrainConfig, build_config
from aevision.data.batches import TensorBatches
from aevision.engine import Trainer
from aevision.errors import ConfigError, DivergenceError
from aevision.models import build_model


def test_gradients_are_clipped_before_each_step(tmp_path, monkeypatch):
    model = build_model("dense", (1, 6, 6), {"hidden": [8], "code_dim": 4})
    data = TensorBatches(torch.randint(0, 256, (64, 1, 6, 6), dtype=torch.uint8), 16, seed=0)
    norms: list[float] = []
    original = torch.optim.Adam.step

    def spy(self, *args, **kwargs):
        grads = [p.grad.flatten() for g in self.param_groups for p in g["params"] if p.grad is not None]
        norms.append(float(torch.cat(grads).norm()))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", spy)
    cfg = TrainConfig(epochs=2, batch_size=16, lr=1e-2, progress=False, gradient_clip_norm=1e-3)
    Trainer(cfg, tmp_path).fit(model, data, None)
    assert len(norms) == 8 and max(norms) <= 1e-3 * (1 + 1e-4)


def test_gradient_clip_norm_is_validated():
    with pytest.raises(ConfigError, match=r"train\.gradient_clip_norm"):
        build_config(overrides=["train.gradient_clip_norm=0"])


class InfiniteGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("inf")


class Overflowing(torch.nn.Module):
    """A finite loss whose gradient overflows on one batch (as a bf16 spike does)."""

    def __init__(self, at: int):
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)
        self.calls, self.at = 0, at

    def forward(self, x):
        self.calls += 1
        out = self.lin(x.flatten(1))
        if self.calls == self.at:
            out = InfiniteGradient.apply(out)
        recon = (out - x.flatten(1)).pow(2).mean()
        assert torch.isfinite(recon)
        return {"loss": recon, "recon": recon}


def _batches():
    return TensorBatches(torch.randint(0, 255, (64, 1, 2, 2), dtype=torch.uint8), 8, seed=0)


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
