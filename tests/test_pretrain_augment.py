"""Augmentation at pretraining: zoomed crops and photometric jitter on the batches the model reconstructs."""

from __future__ import annotations

import json

import pytest
import torch

import aevision
import aevision.tasks.pretrain as api  # where pretrain builds its batches
from aevision.cli import main
from aevision.config import AugmentConfig, build_config
from aevision.data.augment import Augment, jitter, translate, zoom_grid
from aevision.errors import AevisionError, ConfigError
from aevision.io import read_safetensors
from conftest import tiny_config


def test_zoomed_crops_stay_inside_the_image_and_differ_per_sample():
    torch.manual_seed(0)
    grid = zoom_grid((64, 3, 12, 20), 1.5)
    assert grid.shape == (64, 12, 20, 2)
    # the window never leaves the image (no padding to invent), and is at least 1/1.5 of each side
    assert grid.abs().max() <= 1.0
    span = grid[:, -1, -1] - grid[:, 0, 0]
    full = zoom_grid((1, 3, 12, 20), 1.0)
    full_span = full[0, -1, -1] - full[0, 0, 0]
    assert bool((span >= full_span / 1.5 - 1e-5).all()) and bool((span <= full_span + 1e-5).all())
    assert span.std() > 0  # every sample its own window
    # a uniform photo stays uniform: a crop, not a zoom-out with padded borders
    x = torch.full((8, 3, 12, 20), 0.3)
    assert torch.allclose(Augment(AugmentConfig(zoom=2.0))(x), x, atol=1e-6)
    # a left-to-right ramp zoomed in: each row is still increasing, over a narrower range
    ramp = torch.linspace(0, 1, 20).expand(4, 1, 12, 20).contiguous()
    z = Augment(AugmentConfig(zoom=2.0))(ramp)
    assert bool((z.diff(dim=-1) >= -1e-6).all())
    spread = z[..., -1] - z[..., 0]
    assert bool((spread <= 1 + 1e-6).all()) and spread.mean() < 0.95


def test_translation_moves_each_image_by_whole_pixels_with_mirrored_edges():
    """No resampling: every output is exactly a crop of the reflect-padded input, at its own offset
    within the range, so pixel values are copied and never blurred."""
    torch.manual_seed(0)
    x = torch.rand(64, 3, 8, 10)
    out = translate(x, 2)
    padded = torch.nn.functional.pad(x, (2,) * 4, mode="reflect")
    offsets = []
    for i in range(len(x)):
        found = [(dy, dx) for dy in range(5) for dx in range(5)
                 if torch.equal(padded[i, :, dy:dy + 8, dx:dx + 10], out[i])]
        assert len(found) == 1
        offsets.append(found[0])
    assert len(set(offsets)) > 10  # each image its own offset, over the whole range
    assert {dy for dy, _ in offsets} == {dx for _, dx in offsets} == set(range(5))
    assert torch.equal(Augment(AugmentConfig())(x), x)
    with pytest.raises(AevisionError, match=r"augment\.translate: 8 pixels; expected fewer than the image"):
        translate(x, 8)
    with pytest.raises(ConfigError, match=r"augment\.translate: got 1\.5, expected an integer"):
        build_config(overrides=["augment.translate=1.5"])
    with pytest.raises(ConfigError, match=r"augment\.translate: got -1, expected a whole number of pixels"):
        build_config(overrides=["augment.translate=-1"])


def test_jitter_changes_brightness_and_contrast_per_image_within_bounds():
    torch.manual_seed(1)
    x = torch.rand(16, 3, 8, 8) * 0.5 + 0.25
    torch.manual_seed(2)
    y = jitter(x, 0.2)
    assert y.min() >= 0 and y.max() <= 1
    shift = (y.mean(dim=(1, 2, 3)) - x.mean(dim=(1, 2, 3))).abs()
    assert bool((shift <= 0.2 + 1e-5).all()) and shift.std() > 0
    ratio = y.std(dim=(1, 2, 3)) / x.std(dim=(1, 2, 3))  # nothing clamps in this range
    assert bool((ratio >= 0.8 - 1e-4).all()) and bool((ratio <= 1.2 + 1e-4).all())
    torch.manual_seed(2)
    assert torch.equal(Augment(AugmentConfig(jitter=0.2))(x), y)  # seeded like every draw


def test_pretraining_reconstructs_augmented_batches(tmp_path, monkeypatch):
    made = []

    class Spy(api.TensorBatches):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(api, "TensorBatches", Spy)
    cfg = tiny_config(tmp_path / "aug", augment={"zoom": 1.5, "hflip": True, "jitter": 0.2})
    result = aevision.pretrain(cfg)
    train = made[0]
    assert isinstance(train.transform, Augment) and train.transform.cfg.zoom == 1.5
    torch.manual_seed(0)
    raw = next(Spy(train.data, 32, seed=0).epoch(0))
    torch.manual_seed(0)
    changed = next(Spy(train.data, 32, seed=0, transform=train.transform).epoch(0))
    assert not torch.allclose(raw, changed)
    # the saved config says how the model was trained
    saved = json.loads((tmp_path / "aug" / "config.json").read_text())
    assert saved["config"]["augment"]["zoom"] == 1.5 and result.config.augment.jitter == 0.2
    plain = aevision.pretrain(tiny_config(tmp_path / "plain"))
    assert made[-1].transform is None  # off by default: the same batches as before the option existed
    assert [h["train_loss"] for h in plain.history] != [h["train_loss"] for h in result.history]


def test_an_augmented_run_resumes_to_the_uninterrupted_weights(tmp_path):
    aug = {"zoom": 1.3, "jitter": 0.1, "hflip": True}
    train = {"epochs": 3, "batch_size": 32, "progress": False, "deterministic": True}
    aevision.pretrain(tiny_config(tmp_path / "full", augment=aug, train=train))
    part = tiny_config(tmp_path / "part", augment=aug, train={**train, "epochs": 1})
    aevision.pretrain(part)
    part["train"]["epochs"] = 3
    assert aevision.pretrain(part, resume=True).fit.resumed_from.endswith("last.ckpt")
    a = read_safetensors(tmp_path / "full" / "model.safetensors")
    b = read_safetensors(tmp_path / "part" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bad_augment_options_are_named():
    with pytest.raises(ConfigError, match=r"augment\.zoom: got 0\.5, expected a number >= 1"):
        build_config(overrides=["augment.zoom=0.5"])
    with pytest.raises(ConfigError, match=r"augment\.jitter"):
        build_config(overrides=["augment.jitter=1.5"])
    with pytest.raises(ConfigError, match=r"data\.clip_length: got 4, expected null when augment is on"):
        build_config(overrides=["data.name=moving-shapes", "data.clip_length=4", "augment.hflip=true"])


def test_cli_pretrain_takes_augment_overrides(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["pretrain", "--dataset", "digits", "--epochs", "1", "-o", str(out), "--limit", "200",
                 "--no-progress", "augment.zoom=1.2", "augment.jitter=0.1"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["augment"]["zoom"] == 1.2 and summary["config"]["augment"]["jitter"] == 0.1
    assert main(["pretrain", "--dataset", "digits", "-o", str(tmp_path / "bad"), "augment.zoom=0.9"]) != 0
    assert "augment.zoom: got 0.9" in capsys.readouterr().err


def test_vertical_flips_and_quarter_turns_move_whole_images():
    x = torch.rand(16, 1, 6, 6)
    torch.manual_seed(0)
    y = Augment(AugmentConfig(vflip=True, rot90=True))(x)
    turned = [[torch.rot90(f, q, dims=(-2, -1)) for q in range(4)] for f in (x, x.flip(-2))]
    assert all(any(torch.equal(y[i], t[i]) for ts in turned for t in ts) for i in range(16))
    assert not torch.equal(y, x)
