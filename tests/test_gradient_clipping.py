"""``train.gradient_clip_norm``: every optimizer step sees gradients of at most that norm."""

from __future__ import annotations

import pytest
import torch

from aevision.config import TrainConfig, build_config
from aevision.data.batches import TensorBatches
from aevision.engine import Trainer
from aevision.errors import ConfigError
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
