"""The ``patches`` architecture (Coates et al.'s single layer over whitened patches): its whitening,
shapes, the per-position top-k code, save/load, and a tiny pretrain + probe on digits (offline)."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from aevision.errors import ConfigError
from aevision.models import build_model, load_model, save_model
from aevision.tasks.features import FeatureConfig, FeatureEncoder, extract
from conftest import tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")


def small(regs: list | None = None, **options):
    return build_model("patches", (3, 12, 10), {"patch_size": 3, "features": 16, **options}, regs or [])


def whitening(model):
    return model.encoder.stages[0][0]


def test_shapes_follow_the_patch_grid():
    model = small(stride=2)  # grid (12 - 3) // 2 + 1 = 5 by (10 - 3) // 2 + 1 = 4
    x = torch.rand(4, 3, 12, 10)
    assert model.notes["code_shape"] == (16, 5, 4) and model.code_dim == 16 * 5 * 4
    z = model.encode(x)
    assert z.shape == (4, 16 * 5 * 4)
    assert model.decode(z).shape == model.target(x).shape == (4, 27, 5, 4)  # 27 = 3 x 3 x 3
    assert FeatureEncoder(model, FeatureConfig(source="stages", pool=2)).dim == 16 * 4


def test_the_first_training_batch_fits_the_whitening_and_only_it():
    model = small(whiten_eps=1e-6)
    assert not bool(whitening(model).fitted)
    model.eval()
    model(torch.rand(8, 3, 12, 10))  # evaluation never fits
    assert not bool(whitening(model).fitted) and torch.equal(whitening(model).zca, torch.eye(27))
    model.train()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(64, 3, 12, 10, generator=gen) ** 2  # correlated channels, uneven variances
    x = x + x.roll(1, dims=1)
    model(x)
    assert bool(whitening(model).fitted)
    # the fitting batch's whitened patches: unit variance in every direction but the one the
    # contrast normalisation removed (every patch's values sum to 0)
    w = model.target(x).permute(0, 2, 3, 1).reshape(-1, 27).double()
    eig = torch.linalg.eigvalsh(torch.cov(w.T))
    assert eig[0] < 1e-3 and torch.allclose(eig[1:], torch.ones(26, dtype=torch.float64), atol=2e-3)
    zca = whitening(model).zca.clone()
    model(torch.rand(64, 3, 12, 10, generator=gen))  # later batches leave it as it is
    assert torch.equal(whitening(model).zca, zca)


def test_patches_are_normalised_for_brightness_and_contrast():
    model = small().eval()
    x = torch.rand(2, 3, 12, 10)
    # equal up to the contrast epsilon (a floor under the variance; about 0.3% here)
    assert torch.allclose(model.target(x), model.target(0.1 + 0.5 * x), rtol=1e-2, atol=1e-3)


def test_save_load_keeps_the_whitening(tmp_path):
    model = small([{"name": "topk", "k": 4, "over": "channels"}])
    model.train()
    model(torch.rand(16, 3, 12, 10))
    save_model(model, tmp_path)
    loaded = load_model(tmp_path)
    assert bool(whitening(loaded).fitted)
    assert torch.equal(whitening(loaded).zca, whitening(model).zca)
    assert torch.equal(whitening(loaded).mean, whitening(model).mean)
    x = torch.rand(3, 3, 12, 10)
    assert torch.allclose(loaded.eval().reconstruct(x), model.eval().reconstruct(x))
    # the whitening is saved once, under the encoder (the target only refers to it)
    buffers = [f"encoder.stages.0.0.{b}" for b in ("mean", "zca", "fitted")]
    assert [n for n, _ in loaded.named_buffers()] == buffers


def test_topk_over_channels_keeps_k_units_at_every_position():
    model = small([{"name": "topk", "k": 3, "eval_k": 5, "over": "channels"}])
    x = torch.rand(4, 3, 12, 10)
    per_position = model.train().encode(x).reshape(4, 16, -1).ne(0).sum(1)
    assert per_position.max() == 3 and per_position.float().mean() > 2.5  # ReLU may zero a few more
    assert model.eval().encode(x).reshape(4, 16, -1).ne(0).sum(1).max() == 5


@pytest.mark.parametrize("op", ["avg", "max"])
def test_a_pooled_code_is_the_sparse_code_the_model_was_trained_with(op):
    model = small([{"name": "topk", "k": 3, "over": "channels"}]).eval()
    x = torch.rand(4, 3, 12, 10)
    fe = FeatureEncoder(model, FeatureConfig(source="code", pool=2, pool_op=op))
    sparse = model.encode(x).reshape(4, 16, 10, 8)  # top-3 of 16 units at each of 10 x 8 positions
    pool = torch.nn.functional.adaptive_avg_pool2d if op == "avg" else torch.nn.functional.adaptive_max_pool2d
    assert fe.dim == 16 * 4 and torch.equal(fe(x), pool(sparse, 2).flatten(1))
    dense = FeatureEncoder(model, FeatureConfig(source="stages", pool=2, pool_op=op))(x)
    assert not torch.equal(fe(x), dense)  # the stage map is the code before its top-k


def test_pooling_a_flat_code_is_refused_by_name():
    with pytest.raises(ConfigError, match="code is flat") as err:
        FeatureEncoder(build_model("conv", (3, 16, 16), {"channels": [4], "code_dim": 8}),
                       FeatureConfig(source="code", pool=2), "models.conv.features")
    assert err.value.field == "models.conv.features.pool"


@pytest.mark.parametrize("regs, field", [
    ([{"name": "topk", "k": 17, "over": "channels"}], "regularizers[0].k"),
    ([{"name": "topk", "k": 2, "over": "pixels"}], "regularizers[0].over"),
])
def test_topk_over_channels_is_checked(regs, field):
    with pytest.raises(ConfigError) as err:
        small(regs)
    assert err.value.field == field


def test_topk_over_channels_needs_a_map_code():
    with pytest.raises(ConfigError, match="not a feature map") as err:
        build_model("dense", (1, 8, 8), {"code_dim": 16}, [{"name": "topk", "k": 2, "over": "channels"}])
    assert err.value.field == "regularizers[0].over"


@pytest.mark.parametrize("option, value", [("patch_size", 13), ("stride", 0), ("features", 0),
                                           ("whiten_eps", 0.0)])
def test_options_are_validated_and_named(option, value):
    with pytest.raises(ConfigError) as err:
        small(**{option: value})
    assert err.value.field == f"model.{option}"


def test_tiny_pretrain_in_bf16_then_probe_of_the_pooled_map_beats_chance(tmp_path):
    from aevision.tasks.pretrain import pretrain
    from aevision.tasks.probe import LinearProbe

    cfg = tiny_config(tmp_path, model={"name": "patches", "patch_size": 3, "features": 32},
                      regularizers=[{"name": "topk", "k": 4, "over": "channels"}],
                      train={"epochs": 2, "batch_size": 32, "progress": False, "precision": "bf16-mixed"})
    result = pretrain(cfg)
    losses = [row["train_loss"] for row in result.history]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
    loaded = load_model(result.out_dir)
    # fitted on real patches (a blank batch would give every direction the full 1 / sqrt(eps))
    assert bool(whitening(loaded).fitted) and whitening(loaded).zca.abs().max() < 0.9 / 0.1**0.5
    train, test = result.data.train, result.data.test
    feats = FeatureEncoder(loaded, FeatureConfig(source="stages", pool=2))
    probe = LinearProbe().fit(extract(feats, train), train.labels)
    accuracy = float((probe.predict(extract(feats, test)) == test.labels).float().mean())
    assert accuracy > 0.5  # chance: 0.1


def test_extraction_batches_follow_the_widest_map():
    from aevision.tasks.features import batch_for_memory

    wide = FeatureEncoder(build_model("patches", (3, 32, 32), {"features": 1600}),
                          FeatureConfig(source="stages", pool=2))
    # 1,600 x 27 x 27 floats an image, twice (a layer's input and output): 9.3 MB -> 57 in 512 MB
    assert batch_for_memory(wide, (3, 32, 32)) == 512 * 2**20 // (2 * 4 * 1600 * 27 * 27)
    narrow = FeatureEncoder(build_model("conv", (3, 32, 32), {"channels": [8, 16], "code_dim": None}),
                            FeatureConfig(source="stages", pool=2))
    assert batch_for_memory(narrow, (3, 32, 32)) == 1024
    model = small()
    model.train()
    model(torch.rand(16, 3, 12, 10))
    fe = FeatureEncoder(model, FeatureConfig(source="stages", pool=2))
    images = (torch.rand(23, 3, 12, 10) * 255).to(torch.uint8)
    # the widest output here is the whitened patches: 27 numbers at each of 10 x 8 positions
    assert batch_for_memory(fe, (3, 12, 10), budget=8 * 27 * 10 * 8 * 5) == 5
    assert torch.allclose(extract(fe, images), extract(fe, images, batch_size=5))


def test_whitened_patches_are_not_drawn_as_reconstructions(tmp_path, capsys):
    """A patches model reproduces whitened patch vectors, not an image: ``reconstruct`` refuses in
    one line, and the HTML report notes it instead of drawing a grid of whitened noise."""
    from aevision.cli import main
    from aevision.tasks.html_report import reconstruction_figure

    model = small()
    assert model.reconstructs == "whitened patches"
    assert build_model("conv", (3, 12, 10), {"channels": [4]}).reconstructs == "images"
    save_model(model, tmp_path / "run")
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.new("RGB", (10, 12), (200, 30, 90)).save(folder / "a.png")
    assert main(["reconstruct", str(tmp_path / "run"), str(folder), "-o", str(tmp_path / "r.png")]) == 2
    err = capsys.readouterr().err
    assert "reconstructs whitened patches, not images" in err and err.count("\n") == 1
    assert not (tmp_path / "r.png").exists()
    cfg = {"data": {"name": "shapes", "channels": 3, "image_size": [12, 10], "limit": 20}}
    (note,) = reconstruction_figure(tmp_path / "run", cfg)
    assert "whitened patches, not images" in note
