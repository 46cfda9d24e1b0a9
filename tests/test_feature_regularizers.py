"""Regularizers that shape features for classification: geometric denoising, winner-take-all."""

from __future__ import annotations

import pytest
import torch

from aevision.errors import ConfigError
from aevision.models import build_model


def test_geometric_denoising_warps_the_training_input_only():
    model = build_model("conv", (1, 16, 16), {"channels": [4, 8], "code_dim": 8},
                        [{"name": "geometric", "shift": 0.2, "rotate": 20}])
    reg = model.regularizers[0]
    x = torch.zeros(3, 1, 16, 16)
    x[:, :, 4:8, 4:8] = 1.0
    torch.manual_seed(0)
    warped = reg.corrupt(x)
    assert warped.shape == x.shape and not torch.allclose(warped, x)
    model.eval()  # no corruption outside training: the loss is that of the image itself
    with torch.no_grad():
        clean = torch.nn.functional.mse_loss(model.reconstruct(x), x)
        assert torch.allclose(model(x)["recon"], clean)
    with pytest.raises(ConfigError, match=r"regularizers\[0\]\.rotate"):
        build_model("conv", (1, 16, 16), {"channels": [4]}, [{"name": "geometric", "rotate": 500}])


def test_winner_take_all_keeps_one_unit_per_map_and_the_batch_best_in_training():
    model = build_model("conv", (1, 16, 16), {"channels": [4, 6], "code_dim": None},
                        [{"name": "wta", "lifetime": 0.25}])
    x = torch.rand(8, 1, 16, 16)
    model.eval()
    dense = model.encoder(x).reshape(8, 6, -1)
    sparse = model.encode(x).reshape(8, 6, -1)
    assert ((sparse != 0).sum(2) <= 1).all()  # spatial: one winner per map and image
    assert torch.equal(sparse.amax(2), dense.amax(2))  # ... and it is the map's maximum
    model.train()
    train = model.encode(x).reshape(8, 6, -1)
    active = (train != 0).sum((0, 2))
    assert (active <= 2).all()  # lifetime: each map wins in at most 25% of the 8 images
    loss = model(x)["loss"]
    loss.backward()
    assert model.encoder.stages[0][0].weight.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="code_dim=null"):
        build_model("conv", (1, 16, 16), {"channels": [4], "code_dim": 8}, [{"name": "wta"}])
    with pytest.raises(ConfigError, match=r"regularizers\[0\]\.lifetime"):
        build_model("conv", (1, 16, 16), {"channels": [4], "code_dim": None},
                    [{"name": "wta", "lifetime": 0}])
