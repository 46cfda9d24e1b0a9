"""A folder whose top level is train/ + test/ (+ val/): the dataset's own splits, not two classes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from aevision.cli import main
from aevision.config import DataConfig
from aevision.data import load_dataset
from aevision.data.folder import load_folder
from aevision.errors import ConfigError, DataError


def split_folder(root, counts, classes=("cat", "dog"), suffix="png", size=(6, 6)):
    """``counts[split]`` RGB images per class under ``root/split/class/``; pixel value = a code of
    (split, class, index), so a test can tell where every image came from."""
    for s, (split, n) in enumerate(counts.items()):
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                value = 40 * s + 10 * c + i
                Image.new("RGB", size, (value, value, value)).save(folder / f"{i:03d}.{suffix}")
    return root


def test_train_and_test_folders_are_the_splits_and_the_val_fraction_is_carved_from_train(tmp_path):
    root = split_folder(tmp_path / "cifar", {"train": 5, "test": 3}, suffix="jpg")
    splits = load_dataset(DataConfig(name=f"folder:{root}", val_fraction=0.2), seed=0)
    assert splits.train.classes == ["cat", "dog"]  # not ["test", "train"]
    assert len(splits.train) + len(splits.val) == 10 and len(splits.val) == 2
    assert len(splits.test) == 6 and splits.test.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert all("/test/" in f for f in splits.test.files)
    assert not any("/test/" in f for f in splits.train.files + splits.val.files)
    assert splits.train.image_shape == (3, 6, 6)


def test_a_val_folder_is_the_validation_split_and_labels_follow_train_classes(tmp_path):
    root = split_folder(tmp_path / "d", {"train": 2, "val": 2, "test": 1}, classes=("a", "b", "c"))
    for path in (root / "val" / "a").iterdir():  # val without class a: its labels still index train's
        path.unlink()
    (root / "val" / "a").rmdir()
    splits = load_dataset(DataConfig(name=f"folder:{root}", val_fraction=0.5), seed=0)
    assert len(splits.train) == 6 and len(splits.test) == 3  # nothing carved from train
    assert splits.val.classes == ["a", "b", "c"] and splits.val.labels.tolist() == [1, 1, 2, 2]
    assert splits.val.images[:, 0, 0, 0].tolist() == [50, 51, 60, 61]  # split 1, classes b and c


def test_split_folders_that_disagree_are_errors_naming_the_folder(tmp_path):
    root = split_folder(tmp_path / "d", {"train": 2, "test": 1})
    (root / "test" / "bird").mkdir()
    Image.new("RGB", (6, 6)).save(root / "test" / "bird" / "x.png")
    with pytest.raises(DataError, match=r"test/bird: class folder 'bird' is not one of .*train's"):
        load_dataset(DataConfig(name=f"folder:{root}"), seed=0)
    other = split_folder(tmp_path / "e", {"train": 2, "test": 1})
    for path in (other / "test" / "dog").iterdir():
        path.replace(other / "test" / f"dog-{path.name}")
    for sub in ("cat", "dog"):
        for path in (other / "test" / sub).iterdir():
            path.unlink()
        (other / "test" / sub).rmdir()
    with pytest.raises(DataError, match=r"has class folders but .*test has none"):
        load_dataset(DataConfig(name=f"folder:{other}"), seed=0)
    sized = split_folder(tmp_path / "f", {"train": 2, "test": 1})
    Image.new("RGB", (8, 8)).save(sized / "test" / "cat" / "000.png")
    Image.new("RGB", (8, 8)).save(sized / "test" / "dog" / "000.png")
    with pytest.raises(DataError, match="splits differ in size"):
        load_dataset(DataConfig(name=f"folder:{sized}"), seed=0)
    with pytest.raises(ConfigError, match=r"test_fraction.*own test/ split"):
        load_dataset(DataConfig(name=f"folder:{root}", options={"test_fraction": 0.2}), seed=0)


def test_a_split_root_read_as_one_image_folder_says_to_name_a_split(tmp_path):
    root = split_folder(tmp_path / "d", {"train": 1, "test": 1})
    with pytest.raises(DataError, match=r"holds the splits train/ and test/, not classes.*--split"):
        load_folder(root)
    named = split_folder(tmp_path / "n", {"train": 1, "bus": 1, "car": 1})
    assert load_folder(named).classes == ["bus", "car", "train"]  # a class called train is a class


@pytest.mark.parametrize("splits, why", [
    ({"train": 1, "test": 1, "other": 1}, "other/ beside them"),
    ({"train": 1, "valid": 1}, r"no test/ folder \(rename the one held out to test/\)"),
    ({"train": 1, "val": 1, "valid": 1, "test": 1}, "both val/ and valid/"),
])
def test_subfolders_that_look_like_splits_in_no_layout_are_refused_not_read_as_classes(tmp_path, splits, why):
    """Read as classes, a test/ folder's images would be trained on (and 'train' would be a label)."""
    root = split_folder(tmp_path / "d", splits)
    with pytest.raises(DataError, match=rf"look like a dataset's splits, but it has {why}"):
        load_dataset(DataConfig(name=f"folder:{root}"), seed=0)


@pytest.mark.parametrize("name", ["valid", "validation"])
def test_valid_or_validation_is_the_validation_folder(tmp_path, name):
    root = split_folder(tmp_path / "d", {"train": 3, name: 2, "test": 1})
    splits = load_dataset(DataConfig(name=f"folder:{root}"), seed=0)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (6, 4, 2)
    assert splits.train.classes == ["cat", "dog"]


def test_encode_and_the_benchmark_take_the_folders_own_test_split(tmp_path, capsys):
    from aevision.benchmark import load_benchmark, run_benchmark
    from aevision.models import build_model, save_model

    root = split_folder(tmp_path / "d", {"train": 6, "test": 2})
    model = save_model(build_model("dense", (3, 6, 6), {"code_dim": 4}), tmp_path / "m")
    out = tmp_path / "f.npy"
    assert main(["encode", str(model), "--dataset", f"folder:{root}", "--split", "test",
                 "-o", str(out)]) == 0
    rows = json.loads(out.with_suffix(".rows.json").read_text())
    assert len(np.load(out)) == 4 and rows["labels"] == [0, 0, 1, 1]
    assert main(["encode", str(model), str(root), "-o", str(out)]) == 2
    assert "not classes" in capsys.readouterr().err
    assert main(["encode", str(model), str(root / "test"), "-o", str(out)]) == 0  # a split's own folder
    assert (f"{root / 'test'} is the test split of {root}: its labels number the classes it holds; "
            f"--dataset folder:{root} --split test") in capsys.readouterr().err
    cfg = load_benchmark("quick", [f"output_dir={tmp_path / 'b'}", "models={}", "baselines=[pixels]",
                                   "labels=[all]", "protocols.knn.enabled=false",
                                   "protocols.finetune.enabled=false", "protocols.finetune.models=null",
                                   "imbalance.ratio=null", "confusion_png=false",
                                   f"datasets=[{{name: 'folder:{root}'}}]"])
    board = run_benchmark(cfg, verbose=False).board
    info = board["datasets"][f"folder:{root}"]
    assert (info["train"], info["val"], info["test"]) == (10, 2, 4)
    assert board["records"][0]["method"] == "pixels" and len(board["records"]) == 1


@pytest.mark.parametrize("memory", [None, 0])
def test_pretrain_reads_the_train_split_in_memory_or_streamed(tmp_path, memory):
    """``pretrain`` plans its data from train/ (it errored on the split root); streamed, the files
    it trains on are train/'s alone."""
    root = split_folder(tmp_path / "d", {"train": 8, "test": 4})
    out = tmp_path / "m"
    args = ["pretrain", "--model", "dense", "--dataset", f"folder:{root}", "--epochs", "1",
            "--batch-size", "4", "-o", str(out), "--no-progress", "model.code_dim=4"]
    if memory is not None:
        args.append(f"data.memory={memory}")
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    data = summary["data"]
    assert data["name"].endswith("/d/train") and data["classes"] == ["cat", "dog"]
    held_out = data["val"]["images"] if data["val"] else 0  # streamed: carved from the listing
    assert data["train"]["images"] + held_out == 16 and data.get("streamed", False) == (memory == 0)


def test_prepare_writes_a_split_folders_own_splits_with_one_class_list(tmp_path):
    from aevision.data.shards import read_info
    from aevision.tasks.prepare import prepare

    root = split_folder(tmp_path / "d", {"train": 5, "test": 2})
    info = prepare(str(root), tmp_path / "s", progress=False, val_fraction=0.2).info
    assert info.counts == {"train": 8, "val": 2, "test": 4} and info.classes == ["cat", "dog"]
    assert read_info(str(tmp_path / "s")).counts["test"] == 4


def test_prepare_takes_a_folders_options_and_refuses_unknown_ones(tmp_path):
    from aevision.tasks.prepare import prepare

    flat = split_folder(tmp_path / "d", {"x": 5}) / "x"  # class folders cat/ and dog/, 5 images each
    info = prepare(str(flat), tmp_path / "s", progress=False, val_fraction=0.0,
                   options={"test_fraction": 0.2}).info
    assert info.counts == {"train": 8, "test": 2}
    with pytest.raises(ConfigError, match="bogus"):
        prepare(str(flat), tmp_path / "t", progress=False, options={"bogus": 1})
