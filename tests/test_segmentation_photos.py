"""Segmenting people in photos: the Clothing Co-Parsing loader (on a fake folder in its layout),
pools of unlabelled images (``union``), epochs sized by steps or images so that few masks still
train, and binary 0/255 mask folders."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

import aevision
from aevision.config import DataConfig, TrainConfig
from aevision.data import load_dataset, load_segmentation
from aevision.data.batches import TensorBatches
from aevision.engine import Trainer
from aevision.errors import AevisionError, ConfigError, DataError
from aevision.tasks.segmentation import segment, segmentation_metrics
from conftest import tiny_config

NAMES = ["null", "skin", "hair", "dress", "shoes", "bag"]


def fake_ccp(root, n_photos=12, n_masked=8):
    """``root/clothing-co-parsing`` as distributed: photos 0001..n (heights differ), masks for the
    first ``n_masked``. Photo i is grey level 10 i; its mask labels a band of rows with label
    i % 5 + 1 (so the person's rows tell which mask was paired with which photo)."""
    folder = root / "clothing-co-parsing"
    (folder / "photos").mkdir(parents=True)
    (folder / "masks").mkdir()
    (folder / "classes.txt").write_text("\n".join(NAMES) + "\n")
    for i in range(1, n_photos + 1):
        h = 40 + 2 * (i % 3)
        Image.fromarray(np.full((h, 28, 3), 10 * i, dtype=np.uint8)).save(folder / "photos" / f"{i:04d}.jpg",
                                                                      quality=95)
        if i <= n_masked:
            mask = np.zeros((h, 28), dtype=np.uint8)
            mask[: 2 * i + 4, 8:20] = i % 5 + 1
            Image.fromarray(mask).save(folder / "masks" / f"{i:04d}.png")
    return folder


def _ccp(root, **options):
    return load_segmentation(DataConfig(name="clothing-co-parsing", root=str(root), image_size=[40, 28],
                                        val_fraction=0.0, options={"n_test": 2, **options}), 0)


def test_ccp_pairs_each_mask_with_its_photo_and_maps_labels(tmp_path):
    fake_ccp(tmp_path)
    s = _ccp(tmp_path)
    assert s.train.classes == ["background", "person"] and len(s.train) == 6 and len(s.test) == 2
    for part in (s.train, s.test):
        for image, mask, file in zip(part.images, part.masks, part.files, strict=True):
            i = int(file.rsplit("/", 1)[-1][:4])
            assert abs(int(image.float().mean()) - 10 * i) <= 2  # the photo itself
            rows = int(mask[:, 14].sum())  # its own mask: 2 i + 4 labelled rows (resized from h)
            assert abs(rows - (2 * i + 4) * 40 / (40 + 2 * (i % 3))) <= 1
            assert set(mask.unique().tolist()) == {0, 1}
    groups = _ccp(tmp_path, labels="groups")
    assert groups.train.classes == ["background", "skin", "hair", "upper", "lower", "whole", "footwear",
                                    "accessories"]
    every = _ccp(tmp_path, labels="all")
    assert every.train.classes == ["background", *NAMES[1:]]
    group_of = {1: 1, 2: 2, 3: 5, 4: 6, 5: 7}  # skin, hair, dress -> whole, shoes -> footwear, bag
    for g, a, file in zip(groups.train.masks, every.train.masks, every.train.files, strict=True):
        label = int(file.rsplit("/", 1)[-1][:4]) % 5 + 1
        assert set(a.unique().tolist()) == {0, label}  # ids as in the file (nearest neighbour)
        assert torch.equal(g, torch.where(a > 0, group_of[label], 0).to(torch.uint8))


def test_ccp_test_split_is_fixed_and_unmasked_photos_only_join_pretraining(tmp_path):
    fake_ccp(tmp_path)
    first, other_seed = _ccp(tmp_path), load_segmentation(
        DataConfig(name="clothing-co-parsing", root=str(tmp_path), image_size=[40, 28], val_fraction=0.25,
                   options={"n_test": 2}), 5)
    assert first.test.files == other_seed.test.files  # the seed never moves the test split
    masked = {f"{i:04d}" for i in range(1, 9)}
    tests = {f.rsplit("/", 1)[-1][:4] for f in first.test.files}
    assert tests <= masked and not tests & {f.rsplit("/", 1)[-1][:4] for f in first.train.files}
    pool = load_dataset(DataConfig(name="clothing-co-parsing", root=str(tmp_path), image_size=[40, 28],
                                   val_fraction=0.0, options={"n_test": 2}), 0)
    stems = [f.rsplit("/", 1)[-1][:4] for f in pool.train.files]
    assert len(pool.train) == 6 + 4 and set(stems) == {f"{i:04d}" for i in range(1, 13)} - tests
    assert len(pool.test) == 2 and pool.train.labels is None


def test_ccp_errors_name_the_file(tmp_path):
    folder = fake_ccp(tmp_path)
    Image.fromarray(np.full((40, 28), 6, dtype=np.uint8)).save(folder / "masks" / "0003.png")
    with pytest.raises(DataError, match=r"0003\.png: label 6 at row 0, column 0 is not in classes\.txt "
                                        r"\(0\.\.5\)"):
        _ccp(tmp_path)
    (folder / "photos" / "0003.jpg").unlink()
    with pytest.raises(DataError, match=r"masks/0003\.png has no photo \(expected photos/0003\.jpg\)"):
        _ccp(tmp_path)
    with pytest.raises(DataError, match=r"has no photos/ and masks/"):
        _ccp(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match=r"data.labels"):
        _ccp(tmp_path, labels="garments")


def _folder(root, n, size):
    root.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(np.full((*size, 3), 20 * i, dtype=np.uint8)).save(root / f"p{i}.png")
    return f"folder:{root}"


def test_a_union_pools_the_training_images_of_several_datasets(tmp_path):
    fake_ccp(tmp_path / "data")
    a, b = _folder(tmp_path / "a", 3, (20, 30)), _folder(tmp_path / "b", 5, (24, 24))
    parts = [a, {"name": "clothing-co-parsing", "options": {"n_test": 2}}, b]
    pool = load_dataset(DataConfig(name="union", root=str(tmp_path / "data"), image_size=[16, 12],
                                   val_fraction=0.0, options={"datasets": parts}), 0)
    assert len(pool.train) == 3 + 10 + 5 and pool.train.image_shape == (3, 16, 12)
    assert pool.train.files[:3] == [str(tmp_path / "a" / f"p{i}.png") for i in range(3)]
    assert len(pool.test) == 2 and pool.train.name == f"union:{a}+clothing-co-parsing+{b}"
    with pytest.raises(DataError, match=r"union: folder:.*b has 3x24x24 images, folder:.*a 3x20x30 "
                                        r"\(set data.image_size"):
        load_dataset(DataConfig(name="union", options={"datasets": [a, b]}), 0)
    with pytest.raises(ConfigError, match=r"data.options.datasets\[1\]"):
        load_dataset(DataConfig(name="union", options={"datasets": [a, {"nme": b}]}), 0)
    cfg = tiny_config(tmp_path / "run", data={"name": "union", "image_size": [16, 16], "val_fraction": 0.0,
                                              "options": {"datasets": [a, b]}},
                      model={"name": "conv", "channels": [4, 8], "code_dim": 8})
    assert len(aevision.pretrain(cfg).data.train) == 8  # pretrain takes a union as any dataset
    for split, n in (("train", 2), ("val", 1), ("test", 1)):  # a part with its own val/ folder
        _folder(tmp_path / "s" / split / "x", n, (24, 24))
    pool = load_dataset(DataConfig(name="union", val_fraction=0.0,
                                   options={"datasets": [b, f"folder:{tmp_path / 's'}"]}), 0)
    assert (len(pool.train), len(pool.test)) == (5 + 2 + 1, 1)  # its validation images are pooled


# --- epochs sized by steps or images --------------------------------------------------------------


def test_an_epoch_of_more_samples_than_the_data_cycles_through_fresh_shuffles():
    data = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1)
    b = TensorBatches(data, 4, seed=1, epoch_size=25, drop_last=True)
    order = b.indices(0)
    assert len(b) == 6 and len(order) == 25
    assert sorted(order[:10].tolist()) == sorted(order[10:20].tolist()) == list(range(10))
    assert not torch.equal(order[:10], order[10:20])  # each pass its own shuffle
    assert torch.equal(TensorBatches(data, 4, seed=1).indices(0), order[:10])  # one pass: as always
    assert len(TensorBatches(data, 16, drop_last=True)) == 1  # never dropped when smaller than a batch
    assert len(TensorBatches(data, 4, epoch_size=6, drop_last=True)) == 1  # sampled


class _Pixel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return {"loss": ((x.mean() - self.w) ** 2)}


def test_epoch_steps_fixes_the_steps_and_few_steps_are_announced(tmp_path, caplog):
    data = torch.randint(0, 255, (45, 1, 2, 2), dtype=torch.uint8)
    cfg = TrainConfig(epochs=3, batch_size=128, progress=False, accelerator="cpu")
    with caplog.at_level(logging.WARNING, logger="aevision"):
        fit = Trainer(cfg, tmp_path / "a").fit(_Pixel(), TensorBatches(data, 128, drop_last=True), None)
    assert fit.steps == 3  # one (partial) batch an epoch: 45 images in batches of 128
    assert ("3 optimiser steps in all (3 epochs x 1 of 45 samples in batches of 128; train.batch_size 128 "
            "is larger than the 45 training samples); under 200") in caplog.text
    caplog.clear()
    cfg = TrainConfig(epochs=3, batch_size=16, epoch_steps=70, progress=False, accelerator="cpu")
    with caplog.at_level(logging.WARNING, logger="aevision"):
        fit = Trainer(cfg, tmp_path / "b").fit(_Pixel(), TensorBatches(data, 16, drop_last=True), None)
    assert fit.steps == 210 and "optimiser steps" not in caplog.text
    with pytest.raises(ConfigError, match=r"train.epoch_steps"):
        TrainConfig(epoch_steps=0).validate()


def _shapes_segment(tmp_path, name, **extra):
    base = {"init": "scratch", "arch": {"name": "conv", "options": {"channels": [4, 8]}},
            "output_dir": str(tmp_path / name), "examples": 0,
            "data": {"name": "shapes-seg", "val_fraction": 0.0,
                     "options": {"n_train": 40, "n_test": 8, "size": 16}},
            "train": {"epochs": 2, "batch_size": 8, "progress": False, "accelerator": "cpu"}}
    return segment({**base, **extra})


def test_few_masks_train_as_many_steps_as_all_of_them(tmp_path):
    every = _shapes_segment(tmp_path, "all")
    few = _shapes_segment(tmp_path, "few", labels=3)
    assert every.fit.steps == few.fit.steps == 2 * 5  # 40 image draws an epoch, 3 masks or 40
    fixed = _shapes_segment(tmp_path, "fixed", labels=3, epoch_images=16)
    assert fixed.fit.steps == 2 * 2


# --- masks as users have them -------------------------------------------------------------------


def _binary_folder(root, n=5, values=(0, 255)):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(root / "images" / f"{i}.png")
        mask = np.full((12, 16), values[0], dtype=np.uint8)
        mask[2:9, 3:11] = values[1]
        Image.fromarray(mask).save(root / "masks" / f"{i}.png")
    return root


def test_binary_0_255_masks_are_background_and_foreground(tmp_path, caplog):
    root = _binary_folder(tmp_path / "d")
    with caplog.at_level(logging.INFO, logger="aevision"):
        s = load_segmentation(DataConfig(name=f"segfolder:{root}", val_fraction=0.0), 0)
    assert s.train.classes == ["background", "foreground"]
    assert set(s.train.masks.unique().tolist()) == {0, 1} and int(s.train.masks[0, 5, 5]) == 1
    assert ("5 masks, binary masks (0 and 255 only): 255 read as class 1; classes 0 background 70.8%, "
            "1 foreground 29.2%; 0 pixels (0.0%) unknown (255), ignored") in caplog.text
    (root / "classes.txt").write_text("a\nb\nc\n")  # three names: 255 stays unknown
    three = load_segmentation(DataConfig(name=f"segfolder:{root}", val_fraction=0.0), 0)
    assert three.train.classes == ["a", "b", "c"] and 255 in three.train.masks.unique().tolist()
    out = _segment_folder(tmp_path, _binary_folder(tmp_path / "e"))
    assert set(out.metrics["iou"]) == {"background", "foreground"}


def _segment_folder(tmp_path, root):
    return segment({"init": "scratch", "arch": {"name": "conv", "options": {"channels": [4, 8]}},
                    "output_dir": str(tmp_path / f"run-{root.name}"), "examples": 0,
                    "data": {"name": f"segfolder:{root}", "val_fraction": 0.0,
                             "options": {"test_fraction": 0.4}},
                    "train": {"epochs": 1, "batch_size": 4, "progress": False, "accelerator": "cpu"}})


def test_masks_with_nothing_to_learn_are_refused_and_one_class_scores(tmp_path):
    with pytest.raises(AevisionError, match=r"training masks of segfolder:.* hold only class '0' \(0 pixels "
                                            r"unknown, 255\): nothing to learn"):
        _segment_folder(tmp_path, _binary_folder(tmp_path / "zeros", values=(0, 0)))
    scores = segmentation_metrics(torch.zeros(2, 3, 3), torch.zeros(2, 3, 3), ["background"])
    assert scores["iou"] == {"background": 1.0} and scores["miou"] == 1.0
