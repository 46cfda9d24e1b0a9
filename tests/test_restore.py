"""Restoration: corruptions, the restore task, the classical baselines, the crops dataset."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from aevision.cli import main
from aevision.config import DataConfig
from aevision.data import load_dataset
from aevision.errors import AevisionError, ConfigError
from aevision.models import build_model, save_model
from aevision.regularizers.denoising import block_mask, corrupt
from aevision.tasks import classic_restore
from aevision.tasks.quality import psnr
from aevision.tasks.restore import Degradation, restore


def smooth_images(n: int, size: int = 24, channels: int = 1, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    phase = torch.rand(n, channels, 1, 1, generator=g)
    return (0.5 + 0.4 * torch.sin(6 * (xx + yy) + 6 * phase)).clamp(0, 1)


def test_block_mask_covers_about_the_requested_fraction_in_squares():
    g = torch.Generator().manual_seed(0)
    mask = block_mask((50, 3, 64, 64), 0.25, 8, g)
    assert mask.shape == (50, 1, 64, 64) and mask.dtype == torch.bool
    cover = mask.float().mean().item()
    assert 0.15 < cover < 0.27  # overlaps and borders take a little off
    assert not block_mask((2, 1, 8, 8), 0.0, 4).any()
    x = torch.rand(4, 3, 32, 32)
    y = corrupt(x, "blocks", p=0.3, block=4, generator=torch.Generator().manual_seed(1))
    holes = (y == 0).all(dim=1)
    assert 0.15 < holes.float().mean() < 0.35


def test_gaussian_noise_over_a_range_of_sigmas():
    x = torch.full((400, 1, 16, 16), 0.5)
    y = corrupt(x, "gaussian", sigma=0.1, sigma_max=0.5, clip=False,
                generator=torch.Generator().manual_seed(0))
    stds = (y - x).flatten(1).std(dim=1)
    assert 0.08 < stds.min() < 0.13 and 0.45 < stds.max() < 0.55
    with pytest.raises(ConfigError, match="sigma_max"):
        build_model("conv", (1, 8, 8), {"code_dim": None},
                    [{"name": "denoising", "sigma": 0.3, "sigma_max": 0.1}])


def test_degradation_is_seeded_and_parsed():
    x = smooth_images(3)
    d = Degradation.parse("gaussian:sigma=0.2")
    assert d == Degradation("gaussian", sigma=0.2)
    a, _ = d.apply(x, seed=4)
    b, _ = d.apply(x, seed=4)
    assert torch.equal(a, b)
    holes = Degradation.parse("blocks:p=0.3,block=4")
    damaged, mask = holes.apply(x, seed=0)
    assert mask is not None and torch.equal(damaged, x.masked_fill(mask, 0.0))
    with pytest.raises(AevisionError, match="unknown option"):
        Degradation.parse("gaussian:sigmaa=0.2")
    with pytest.raises(ConfigError):
        Degradation.parse("speckle:p=0.1")


def test_restore_keeps_known_pixels_and_runs_at_any_size():
    model = build_model("conv", (1, 16, 16), {"code_dim": None, "channels": [4, 8]})
    x = smooth_images(2, size=23)
    damaged, holes = Degradation("blocks", p=0.3, block=5).apply(x)
    out = restore(model, damaged, holes)
    assert out.shape == x.shape
    assert torch.equal(out[~holes.expand_as(out)], damaged[~holes.expand_as(damaged)])
    assert not torch.equal(out, damaged)
    with pytest.raises(AevisionError, match="weights depend on the image size"):
        restore(build_model("conv", (1, 16, 16), {"code_dim": 8}), x)


def test_trained_denoiser_beats_the_noisy_input(tmp_path):
    from aevision.api import pretrain
    from aevision.data import ImageSet, Splits

    clean = smooth_images(256, size=12, seed=1)
    data = Splits(train=ImageSet((clean * 255).round().to(torch.uint8), name="waves"), test=None)
    result = pretrain({"model": {"name": "conv", "channels": [8, 8], "code_dim": None},
                       "regularizers": [{"name": "denoising", "sigma": 0.3}],
                       "train": {"epochs": 4, "batch_size": 16, "progress": False, "lr": 3e-3},
                       "output_dir": str(tmp_path / "dae")}, data=data)
    test = smooth_images(32, size=12, seed=2)
    noisy, _ = Degradation("gaussian", sigma=0.3).apply(test, seed=0)
    gain = float(psnr(restore(result.model, noisy), test).mean() - psnr(noisy, test).mean())
    assert gain > 3.0


def test_classical_baselines_and_tuning_use_the_validation_images():
    clean = smooth_images(6, size=32, channels=3)
    noisy, _ = Degradation("gaussian", sigma=0.2).apply(clean)
    weight, tried = classic_restore.tune(classic_restore.tv, (0.01, 0.1, 0.3), clean[:3], noisy[:3], "weight")
    assert set(tried) == {"0.01", "0.1", "0.3"} and tried[str(weight)] == max(tried.values())
    for out in (classic_restore.tv(noisy, weight), classic_restore.nlm(noisy, 0.2)):
        assert out.shape == clean.shape
        assert psnr(out, clean).mean() > psnr(noisy, clean).mean() + 2
    sp, _ = Degradation("salt_pepper", p=0.1).apply(clean)
    assert psnr(classic_restore.median(sp), clean).mean() > psnr(sp, clean).mean() + 5
    damaged, holes = Degradation("blocks", p=0.2, block=4).apply(clean)
    filled = classic_restore.biharmonic(damaged, holes)
    assert psnr(filled, clean).mean() > psnr(damaged, clean).mean() + 5


def write_pngs(folder, arrays):
    folder.mkdir(parents=True, exist_ok=True)
    for i, a in enumerate(arrays):
        Image.fromarray(a).save(folder / f"img{i}.png")


def test_restore_cli_simulates_degrades_and_writes_grid_and_metrics(tmp_path, capsys):
    model = build_model("conv", (1, 16, 16), {"code_dim": None, "channels": [4, 8]},
                        [{"name": "denoising", "sigma": 0.3}])
    save_model(model, tmp_path / "dae")
    rng = np.random.default_rng(0)
    write_pngs(tmp_path / "in", [rng.integers(0, 256, (20, 18), dtype=np.uint8) for _ in range(3)])
    code = main(["restore", str(tmp_path / "dae"), str(tmp_path / "in"), "--task", "denoise",
                 "--simulate", "gaussian:sigma=0.3", "-o", str(tmp_path / "out")])
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["grid.png", "img0.png", "img1.png",
                                                                        "img2.png"]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["degradation"] == {"noise": "gaussian", "sigma": 0.3} and len(metrics["images"]) == 3
    assert "PSNR" in capsys.readouterr().out
    # inpainting real images: transparent pixels are the holes, the rest is kept
    rgba = np.zeros((16, 16, 2), dtype=np.uint8)
    rgba[..., 0], rgba[..., 1] = 200, 255
    rgba[4:8, 4:8, 1] = 0
    (tmp_path / "holes").mkdir()
    Image.fromarray(rgba, mode="LA").save(tmp_path / "holes" / "a.png")
    assert main(["restore", str(tmp_path / "dae"), str(tmp_path / "holes"), "--task", "inpaint",
                 "-o", str(tmp_path / "filled")]) == 0
    out = np.asarray(Image.open(tmp_path / "filled" / "a.png"))
    assert (out[:4] == 200).all() and not (out[4:8, 4:8] == 200).all()
    # a corruption that does not fit the task is a one-line error
    assert main(["restore", str(tmp_path / "dae"), str(tmp_path / "in"), "--task", "inpaint",
                 "--simulate", "gaussian:sigma=0.3", "-o", str(tmp_path / "x")]) == 2
    assert "does not fit --task inpaint" in capsys.readouterr().err


def test_restore_cli_says_when_the_model_makes_the_images_worse(tmp_path, capsys, monkeypatch):
    from aevision.report import plots

    model = build_model("conv", (1, 16, 16), {"code_dim": None, "channels": [4, 8]},
                        [{"name": "denoising", "sigma": 0.3}])
    save_model(model, tmp_path / "dae")  # untrained: its output is far from the bright inputs
    write_pngs(tmp_path / "in", [np.full((16, 16), 235, dtype=np.uint8) for _ in range(2)])
    grids = []
    monkeypatch.setattr(plots, "labelled_grid",
                        lambda path, rows, title, **kw: grids.append((list(rows), title)))
    assert main(["restore", str(tmp_path / "dae"), str(tmp_path / "in"), "--task", "denoise",
                 "--simulate", "gaussian:sigma=0.05", "-o", str(tmp_path / "out")]) == 0
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert m["mean"]["psnr_restored"] < m["mean"]["psnr_degraded"]
    assert "psnr" in m["lowered"]
    line = [s for s in capsys.readouterr().out.splitlines() if "worse" in s]
    assert len(line) == 1 and "lowered PSNR" in line[0]
    assert f"{m['mean']['psnr_degraded']:.2f} -> {m['mean']['psnr_restored']:.2f} dB" in line[0]
    # the grid is titled and labelled for what it shows, not "reconstructions"
    assert grids == [(["degraded (input)", "restored", "clean"], "degraded / restored / clean")]
    assert main(["restore", str(tmp_path / "dae"), str(tmp_path / "in"), "--task", "denoise",
                 "-o", str(tmp_path / "plain")]) == 0
    assert grids[1] == (["input", "restored"], "input / restored")
    assert "worse" not in capsys.readouterr().out  # without clean images nothing is measured


def test_an_image_the_degradation_left_unchanged_is_left_out_of_the_psnr_mean():
    """Its PSNR before restoring is infinite: it made the mean infinite (so 'the model lowered
    PSNR' whatever it did) and metrics.json held Infinity, which strict JSON parsers refuse."""
    from aevision.tasks.restore_files import _quality, paired_means

    clean = torch.full((1, 1, 8, 8), 0.5)
    worse, better = clean + 0.2, clean + 0.05
    rows = [_quality(clean, better, clean), _quality(worse, better, clean)]
    assert rows[0]["psnr_degraded"] is None and rows[0]["ssim_degraded"] == pytest.approx(1.0)
    means = paired_means(rows)
    assert means["psnr_degraded"] == pytest.approx(rows[1]["psnr_degraded"])  # the degraded image only
    assert means["psnr_restored"] > means["psnr_degraded"]
    assert means["ssim_degraded"] == pytest.approx((1.0 + rows[1]["ssim_degraded"]) / 2)
    json.loads(json.dumps(rows), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))


def test_restore_refuses_inputs_that_would_overwrite_each_others_result(tmp_path, capsys):
    save_model(build_model("conv", (1, 16, 16), {"code_dim": None, "channels": [4, 8]}), tmp_path / "m")
    for d in ("a", "b"):
        write_pngs(tmp_path / d, [np.zeros((16, 16), dtype=np.uint8)])
    assert main(["restore", str(tmp_path / "m"), str(tmp_path / "a"), str(tmp_path / "b"),
                 "--task", "denoise", "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "b/img0.png and " in err and "a/img0.png would both be written as img0.png" in err


def test_crops_dataset_is_deterministic_and_holds_out_whole_photos(tmp_path):
    rng = np.random.default_rng(0)
    write_pngs(tmp_path / "photos", [rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                                     for h, w in ((40, 50), (33, 61), (48, 48), (20, 20), (64, 36))])
    cfg = DataConfig(name=f"crops:{tmp_path / 'photos'}", val_fraction=0.0,
                     options={"size": 24, "per_image": 5, "min_scale": 0.5, "test_fraction": 0.25})
    a = load_dataset(cfg, seed=0)
    b = load_dataset(cfg, seed=0)
    assert torch.equal(a.train.images, b.train.images)
    assert a.train.images.shape[1:] == (3, 24, 24)
    assert len(a.train) + len(a.test) == 4 * 5  # the 20x20 photo is smaller than a crop
    assert any("smaller than the crop" in s.reason for s in a.train.skipped)
    assert not set(a.train.files) & set(a.test.files)
    with pytest.raises(ConfigError, match=r"data\.size"):
        load_dataset(DataConfig(name=f"crops:{tmp_path / 'photos'}", options={"size": 4}), 0)


def test_crops_takes_photos_at_every_depth_and_says_what_it_left_out(tmp_path, caplog):
    """Photos are unlabelled: the ones beside a subfolder are photos too, not 'files beside class
    folders' dropped without a word; too small or unreadable ones are counted in a warning."""
    rng = np.random.default_rng(0)
    write_pngs(tmp_path / "photos", [rng.integers(0, 256, (30, 30, 3), dtype=np.uint8) for _ in range(2)])
    write_pngs(tmp_path / "photos" / "more", [rng.integers(0, 256, (30, 30, 3), dtype=np.uint8),
                                              rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)])
    (tmp_path / "photos" / "broken.png").write_bytes(b"no")
    data = load_dataset(DataConfig(name=f"crops:{tmp_path / 'photos'}", val_fraction=0.0,
                                   options={"size": 16, "per_image": 2}), seed=0)
    assert len(data.train) == 3 * 2
    assert "left out 2 of 5 files" in caplog.text


@pytest.mark.parametrize("regs, task, says", [
    ([], "denoise", "not trained to restore (no denoising regularizer)"),
    ([{"name": "denoising", "sigma": 0.3}], "inpaint", "trained on gaussian noise, not on holes"),
    ([{"name": "denoising", "noise": "blocks"}], "denoise", "trained to fill holes (blocks), not to remove"),
    ([{"name": "denoising", "noise": "masking"}], "inpaint", None),
    ([{"name": "denoising", "noise": "salt_pepper"}], "denoise", None),
])
def test_restore_says_when_the_model_was_not_trained_for_the_task(regs, task, says, tmp_path, capsys):
    """A plain autoencoder 'restores' by copying its input: the numbers alone do not say why."""
    save_model(build_model("conv", (1, 16, 16), {"code_dim": None, "channels": [4, 8]}, regs), tmp_path / "m")
    write_pngs(tmp_path / "in", [np.full((16, 16), 100, dtype=np.uint8)])
    simulate = "gaussian:sigma=0.1" if task == "denoise" else "blocks:p=0.25,block=4"
    assert main(["restore", str(tmp_path / "m"), str(tmp_path / "in"), "--task", task,
                 "--simulate", simulate, "-o", str(tmp_path / "out")]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note: ")]
    assert len(notes) == (says is not None) and all(says in line for line in notes)
    recorded = json.loads((tmp_path / "out" / "metrics.json").read_text())["note"]
    assert recorded == (notes[0].removeprefix("note: ") if notes else None)


def test_restore_into_the_inputs_folder_replaces_nothing_unless_asked(tmp_path, capsys):
    """-o the inputs' own folder replaced the originals with restored copies, unasked."""
    save_model(build_model("conv", (1, 16, 16), {"code_dim": None, "channels": [4, 8]}), tmp_path / "m")
    write_pngs(tmp_path / "in", [np.full((16, 16), 40 * i, dtype=np.uint8) for i in range(2)])
    before = {p.name: p.read_bytes() for p in (tmp_path / "in").iterdir()}
    run = ["restore", str(tmp_path / "m"), str(tmp_path / "in"), "--task", "denoise",
           "-o", str(tmp_path / "in")]
    assert main(run) == 2
    assert "img0.png exists already (2 of the 4 files to write); give --overwrite" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in (tmp_path / "in").iterdir()} == before
    out = tmp_path / "out"
    assert main([*run[:-1], str(out), "--simulate", "gaussian:sigma=0.1"]) == 0
    assert (out / "metrics.json").is_file()
    assert main([*run[:-1], str(out)]) == 2  # the earlier results are there
    assert main([*run[:-1], str(out), "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["grid.png", "img0.png", "img1.png"]  # no stale scores
