"""The command line end to end on a small digits subset, and every error path."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import load_file

from aevision.cli import main
from aevision.data.splits import limited

PRETRAIN = ["pretrain", "--dataset", "digits", "--limit", "200", "--epochs", "2",
            "--batch-size", "32", "--no-progress"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert main([*PRETRAIN, "--model", "conv", "-o", str(out), "model.channels=[8,16]",
                 "model.code_dim=12", "--reg", "l1:weight=1e-4"]) == 0
    return out


def test_pretrain_writes_model_config_and_summary(trained):
    cfg = json.loads((trained / "config.json").read_text())
    assert cfg["model"]["name"] == "conv" and cfg["model"]["options"]["code_dim"] == 12
    assert cfg["config"]["regularizers"] == [{"name": "l1", "weight": 1e-4}]
    summary = json.loads((trained / "summary.json").read_text())
    assert summary["config"]["train"]["epochs"] == 2
    assert len(summary["fit"]["history"]) == 2
    # the process's peak memory, what a user sizes a machine by: at least the loaded torch
    assert summary["peak_rss_mib"] > 100


def test_pretrain_from_yaml_and_resume(tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("model: {name: dense, code_dim: 8}\ndata: {name: digits, limit: 150}\n"
                   "train: {epochs: 1, batch_size: 32, progress: false}\n")
    out = tmp_path / "out"
    assert main(["pretrain", "-c", str(cfg), "-o", str(out)]) == 0
    assert main(["pretrain", "-c", str(cfg), "-o", str(out), "--resume", "train.epochs=2"]) == 0
    assert "2 epochs" in capsys.readouterr().out


def test_overrides_on_both_sides_of_an_option_all_apply(tmp_path):
    # argparse alone fills the overrides from the first run of them and rejects the rest
    out = tmp_path / "m"
    assert main([*PRETRAIN, "--epochs", "1", "model.code_dim=6", "-o", str(out), "train.lr=0.002",
                 "model.code_dim=7"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["train"]["lr"] == 0.002
    assert summary["config"]["model"]["code_dim"] == 7  # in order: the later one wins


def test_images_on_both_sides_of_an_option_are_all_read(trained, tmp_path):
    for i in range(2):
        Image.fromarray(np.full((8, 8), 40 * i, dtype=np.uint8)).save(tmp_path / f"{i}.png")
    npy = tmp_path / "f.npy"
    assert main(["encode", str(trained), str(tmp_path / "0.png"), "--batch-size", "4",
                 str(tmp_path / "1.png"), "-o", str(npy)]) == 0
    assert np.load(npy).shape[0] == 2


def test_encode_to_npy_and_safetensors(trained, tmp_path):
    npy = tmp_path / "f.npy"
    assert main(["encode", str(trained), "--dataset", "digits", "--split", "test", "-o", str(npy)]) == 0
    feats = np.load(npy, allow_pickle=False)
    assert feats.shape == (449, 12)
    st = tmp_path / "f.safetensors"
    assert main(["encode", str(trained), "--dataset", "digits", "--limit", "10", "-o", str(st)]) == 0
    loaded = load_file(st)
    assert loaded["features"].shape == (10, 12) and loaded["labels"].shape == (10,)
    drawn = limited(449, 10, seed=0)  # --limit draws its 10 test images with --seed
    np.testing.assert_allclose(loaded["features"], feats[drawn], rtol=1e-5, atol=1e-7)


def test_encode_and_index_splits_are_the_models_own_train_and_validation_images(tmp_path):
    """--split train / val are the images pretrain trained and validated on: with the model's own
    data.val_fraction, seed and limit (not the command's defaults) when --dataset is the data it was
    trained on; 'index --split val' takes the same held-out images."""
    import torch

    from aevision.config import DataConfig
    from aevision.data import load_dataset
    from aevision.models import load_model
    from aevision.models.inference import encode
    from aevision.tasks.retrieval import GalleryIndex

    run = tmp_path / "run"
    assert main(["pretrain", "--dataset", "digits", "--model", "dense", "--epochs", "1", "--no-progress",
                 "--seed", "2", "--limit", "500", "data.val_fraction=0.3", "-o", str(run)]) == 0
    model = load_model(run)
    pretrained = load_dataset(DataConfig(name="digits", limit=500, val_fraction=0.3), seed=2)
    for split in ("train", "val"):
        out = tmp_path / f"{split}.npy"
        assert main(["encode", str(run), "--dataset", "digits", "--split", split, "-o", str(out)]) == 0
        expected = encode(model, getattr(pretrained, split)).numpy()
        np.testing.assert_allclose(np.load(out), expected, rtol=1e-5, atol=1e-6)
    assert len(pretrained.val) == 150  # 0.3 of 500 (per class), not the default 0.1 of 1,348
    index = tmp_path / "val-index"
    assert main(["index", "digits", "--split", "val", "-m", str(run), "-o", str(index)]) == 0
    gallery = GalleryIndex.load(index)
    assert len(gallery) == 150 and torch.equal(torch.as_tensor(gallery.labels), pretrained.val.labels)
    assert main(["search", str(index), "--dataset", "digits", "--split", "val", "--limit", "5"]) == 0


def test_a_folder_dataset_spelt_another_way_still_gets_the_models_own_splits(tmp_path, monkeypatch):
    """folder:photos, folder:./photos and the absolute path are one dataset: each --split val is
    the model's held-out 30%, not a default 10% holding images it trained on."""
    from aevision.models.io import same_dataset

    for c in ("a", "b"):
        (tmp_path / "photos" / c).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(np.full((8, 8), 20 * i + (c == "b") * 5, dtype=np.uint8)).save(
                tmp_path / "photos" / c / f"{i}.png")
    monkeypatch.chdir(tmp_path)
    assert main(["pretrain", "--dataset", "folder:photos", "--model", "dense", "--epochs", "1",
                 "--no-progress", "--seed", "5", "data.val_fraction=0.3", "-o", "run"]) == 0
    for spelt in ("folder:photos", "folder:./photos", f"folder:{tmp_path / 'photos'}"):
        assert main(["encode", "run", "--dataset", spelt, "--split", "val", "-o", "v.npy"]) == 0
        assert len(np.load(tmp_path / "v.npy")) == 6, spelt  # 3 of each class's 10
    assert not same_dataset("folder:photos", "folder:run")
    assert not same_dataset("folder:photos", "crops:photos")
    assert not same_dataset("folder:~aevision-no-such-user/x", "folder:photos")


def test_splits_of_a_dataset_built_with_options_are_the_models_own(tmp_path):
    """A crops set pretrained with per_image=2: --split val rebuilt it with the default 16 crops per
    photo, so none of its 'validation' crops was one the model held out."""
    for i in range(6):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (24, 20), dtype=np.uint8)).save(
            tmp_path / f"p{i}.png")
    run = tmp_path / "run"
    assert main(["pretrain", "--dataset", f"crops:{tmp_path}", "--model", "dense", "--epochs", "1",
                 "--no-progress", "data.size=8", "data.per_image=2", "data.val_fraction=0.34",
                 "-o", str(run)]) == 0
    summary = json.loads((run / "summary.json").read_text())["data"]
    out = tmp_path / "v.npy"
    assert main(["encode", str(run), "--dataset", f"crops:{tmp_path}", "--split", "val", "-o", str(out)]) == 0
    assert len(np.load(out)) == summary["val"]["images"] == 4  # 2 crops of each of 2 held-out photos


def test_encode_and_reconstruct_image_files(trained, tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((20, 16, 3), i * 60, dtype=np.uint8)).save(folder / f"{i}.png")
    out = tmp_path / "f.npy"
    assert main(["encode", str(trained), str(folder), str(folder / "0.png"), "-o", str(out),
                 "--resize", "stretch"]) == 0  # 20x16 photos, a model of 8x8 digits: asked for
    assert np.load(out).shape == (4, 12)
    assert "resized 4 of 4 images to 8x8 (stretched" in capsys.readouterr().err
    grid = tmp_path / "grid.png"
    assert main(["reconstruct", str(trained), "--dataset", "digits", "-n", "6", "-o", str(grid)]) == 0
    assert Image.open(grid).size[0] > 100


def test_listing_commands(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("dense", "conv", "l1", "kl", "topk", "contractive", "denoising"):
        assert f"  {name} " in out
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    for name in ("digits", "mnist", "fashion-mnist", "kmnist", "cifar10", "folder", "shapes"):
        assert f"  {name} " in out
    assert "options: datasets (required)" in out and "inspect" not in out  # union's list has no default
    rows = [line for line in out.splitlines() if line.startswith(("  cifar10 ", "  clothing"))]
    summaries = [line.index("C") for line in rows]
    assert len(summaries) == 2 and len(set(summaries)) == 1  # one column, the longest name's width


@pytest.mark.parametrize("argv,message", [
    (["pretrain", "--model", "resnet"], "model.name: got 'resnet', expected one of"),
    (["pretrain", "--dataset", "imagenet"], "data.name: got 'imagenet'"),
    (["pretrain", "--epochs", "many"], "argument --epochs: invalid int value"),
    (["pretrain", "train.epochz=1"], "train.epochz"),
    (["pretrain", "--reg", "l2"], "regularizers[0].name: got 'l2'"),
    (["pretrain", "-c", "missing.yaml"], "missing.yaml: config file not found"),
    (["pretrain", "--dataset", "mnist", "--data-root", "{tmp}", "data.download=false"],
     "mnist: dataset files not found under"),
    (["encode", "no-such-model", "--dataset", "digits", "-o", "f.npy"], "no such model folder"),
    (["encode", "{model}", "--dataset", "digits", "-o", "f.txt"], "expected a file ending in .npy"),
    (["encode", "{model}", "nothing.png", "-o", "f.npy"], "nothing.png: no such file or folder"),
    (["encode", "{model}", "-o", "f.npy"], "no input"),
    (["reconstruct", "{model}", "--dataset", "digits", "-n", "0", "-o", "g.png"], "--num: got 0"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["pretrain", "train.epochs=1", "-o", "{tmp}/x", "stray"], "unrecognized arguments: stray"),
    (["reconstruct", "{model}", "-n", "2", "-o", "g.png", "--seed", "1", "-x"], "unrecognized arguments: -x"),
])
def test_errors_are_one_line_with_exit_code_2(argv, message, trained, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = [a.replace("{model}", str(trained)).replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert "Traceback" not in err and len(err.splitlines()) == 1


def test_image_size_the_model_cannot_take_is_reported(tmp_path, capsys):
    from aevision.models import build_model, save_model

    save_model(build_model("dense", (1, 8, 8), {"code_dim": 4}), tmp_path / "m")
    import aevision.api as api

    model = api.load(tmp_path / "m")
    with pytest.raises(Exception, match="expects images of shape 1x8x8"):
        api.encode(model, np.zeros((2, 3, 8, 8), dtype=np.uint8))


def test_real_process_exit_code_and_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "aevision.cli", "pretrain", "--model", "nope"],
                          capture_output=True, text=True, cwd=tmp_path)
    from aevision.models import MODELS

    assert proc.returncode == 2
    assert proc.stderr.strip() == ("aevision: error: model.name: got 'nope', "
                                   f"expected one of {', '.join(MODELS.names())}")
