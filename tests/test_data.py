"""Datasets: embedded digits, torchvision loading from local files, folders, generated shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from aevision.config import DataConfig
from aevision.data import labelled_subset, load_dataset
from aevision.data.batches import TensorBatches
from aevision.data.folder import load_folder
from aevision.data.splits import limited
from aevision.errors import AevisionError, ConfigError, DataError
from conftest import fake_mnist


def test_digits_splits_are_deterministic_and_disjoint():
    a = load_dataset(DataConfig(name="digits"), seed=0)
    b = load_dataset(DataConfig(name="digits"), seed=0)
    c = load_dataset(DataConfig(name="digits"), seed=1)
    assert a.train.image_shape == (1, 8, 8) and a.train.images.dtype == torch.uint8
    assert len(a.train) + len(a.val) + len(a.test) == 1797
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.val.labels, b.val.labels)
    assert not torch.equal(a.val.images, c.val.images)  # validation follows --seed
    assert torch.equal(a.test.images, c.test.images)  # the test split never does
    assert a.train.images.max() == 255


def test_limit_and_conform():
    s = load_dataset(DataConfig(name="digits", limit=100, channels=3, image_size=[12, 10],
                                val_fraction=0.2), seed=0)
    assert len(s.train) + len(s.val) == 100
    assert s.train.image_shape == (3, 12, 10) and s.test.image_shape == (3, 12, 10)


def test_a_limit_draws_across_a_class_ordered_set_and_smaller_limits_nest():
    labels = torch.arange(10).repeat_interleave(100)  # 1,000 images stored class by class
    small, large = limited(1000, 30, seed=0), limited(1000, 200, seed=0)
    assert len(small) == 30 and torch.equal(small, small.sort().values)  # in the set's order
    assert labels[small].unique().numel() >= 8  # the first 30 would be one class
    assert set(small.tolist()) <= set(large.tolist())  # a 30-image query set lies in a 200-image gallery
    assert torch.equal(small, limited(1000, 30, seed=0)) and not torch.equal(small, limited(1000, 30, seed=1))
    assert torch.equal(limited(5, 9, seed=0), torch.arange(5))
    assert torch.equal(limited(5, None, seed=0), torch.arange(5))


def test_unknown_dataset_and_option():
    with pytest.raises(ConfigError, match=r"data\.name: got 'digitz'"):
        load_dataset(DataConfig(name="digitz"), 0)
    with pytest.raises(ConfigError, match=r"data\.colour"):
        load_dataset(DataConfig(name="digits", options={"colour": 1}), 0)


def test_mnist_reads_torchvision_layout_from_data_root(tmp_path):
    fake_mnist(tmp_path)
    s = load_dataset(DataConfig(name="mnist", root=str(tmp_path), download=False, val_fraction=0.0), 0)
    assert s.train.image_shape == (1, 28, 28) and len(s.train) == 20 and len(s.test) == 10
    assert s.train.labels.tolist() == [i % 10 for i in range(20)]


def test_missing_dataset_names_the_expected_path(tmp_path):
    with pytest.raises(DataError, match=r"fashion-mnist: dataset files not found under .*FashionMNIST/raw"):
        load_dataset(DataConfig(name="fashion-mnist", root=str(tmp_path), download=False), 0)


def test_shapes_dataset_is_deterministic():
    a = load_dataset(DataConfig(name="shapes", options={"n_train": 40, "n_test": 10, "size": 24}), 0)
    b = load_dataset(DataConfig(name="shapes", options={"n_train": 40, "n_test": 10, "size": 24}), 0)
    assert a.train.image_shape == (3, 24, 24)
    assert torch.equal(a.test.images, b.test.images)
    assert set(a.train.labels.tolist()) <= set(range(5))


def _png(path, size=(10, 12), mode="RGB", value=128):
    Image.new(mode, size, value if mode in ("L", "I;16") else (value, 0, 0)).save(path)


def test_folder_with_class_subfolders_and_messy_files(tmp_path, caplog):
    (tmp_path / "cat").mkdir()
    (tmp_path / "dog").mkdir()
    _png(tmp_path / "cat" / "a.png")
    _png(tmp_path / "cat" / "b.png", mode="L")
    Image.new("RGBA", (10, 12), (1, 2, 3, 4)).save(tmp_path / "dog" / "c.png")
    Image.new("P", (10, 12)).save(tmp_path / "dog" / "d.png")
    Image.fromarray(np.full((12, 10), 65535, dtype=np.uint16)).save(tmp_path / "dog" / "e.png")
    (tmp_path / "dog" / "notes.txt").write_text("hello")
    (tmp_path / "dog" / "empty.png").write_bytes(b"")
    good = (tmp_path / "cat" / "a.png").read_bytes()
    (tmp_path / "dog" / "trunc.png").write_bytes(good[: len(good) // 2])
    (tmp_path / "dog" / "fake.jpg").write_text("not a jpeg")
    data = load_folder(tmp_path, channels=3)
    assert data.classes == ["cat", "dog"]
    assert data.labels.tolist() == [0, 0, 1, 1, 1]
    assert data.image_shape == (3, 12, 10)
    assert data.images[4].float().mean() == 255  # 16-bit white stays white, not clipped noise
    reasons = {s.path.split("/")[-1]: s.reason for s in data.skipped}
    assert set(reasons) == {"notes.txt", "empty.png", "trunc.png", "fake.jpg"}
    assert "skipped 4 of 9 files" in caplog.text
    with pytest.raises(DataError, match="strict mode"):
        load_folder(tmp_path, channels=3, strict=True)


def test_folder_exif_rotation_is_applied(tmp_path):
    img = Image.new("L", (20, 10), 0)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 270 on display: the stored 20x10 shows as 10x20
    img.save(tmp_path / "r.jpg", exif=exif)
    data = load_folder(tmp_path)
    assert data.image_shape == (1, 20, 10)
    assert data.labels is None  # flat folder: unlabelled


def test_folder_size_mismatch_and_empty(tmp_path):
    _png(tmp_path / "a.png", size=(10, 10))
    _png(tmp_path / "b.png", size=(12, 10))
    with pytest.raises(DataError, match=r"images differ in size .* set data.image_size"):
        load_folder(tmp_path)
    assert load_folder(tmp_path, image_size=(8, 8)).image_shape == (3, 8, 8)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no readable images"):
        load_folder(empty)
    with pytest.raises(DataError, match="no such folder"):
        load_folder(tmp_path / "missing")


def test_folder_dataset_via_registry(tmp_path):
    for i in range(6):
        _png(tmp_path / f"{i}.png", size=(9, 9), value=i * 40)
    s = load_dataset(DataConfig(name=f"folder:{tmp_path}", val_fraction=0.34), 0)
    assert len(s.train) == 4 and len(s.val) == 2 and s.test is None
    with pytest.raises(AevisionError, match="needs a path"):
        load_dataset(DataConfig(name="folder"), 0)


@pytest.mark.parametrize("per_class,total", [(3, None), (None, 25)])
def test_labelled_subsets_are_balanced_and_seeded(per_class, total):
    labels = torch.arange(200) % 10
    a = labelled_subset(labels, per_class, seed=4, total=total)
    b = labelled_subset(labels, per_class, seed=4, total=total)
    c = labelled_subset(labels, per_class, seed=5, total=total)
    assert torch.equal(a, b) and not torch.equal(a, c)
    counts = torch.bincount(labels[a], minlength=10)
    assert counts.max() - counts.min() <= (0 if per_class else 1)
    assert len(a) == (per_class * 10 if per_class else total)


def test_too_large_label_budget_is_an_error():
    with pytest.raises(AevisionError, match="fewer than the 30 asked for"):
        labelled_subset(torch.arange(50) % 10, 30, seed=0)


def test_batches_are_seeded_per_epoch_and_sharded():
    data = torch.arange(100, dtype=torch.uint8).view(100, 1, 1, 1)
    b = TensorBatches(data, 16, seed=3)
    e1 = torch.cat(list(b.epoch(1)))
    assert torch.equal(e1, torch.cat(list(b.epoch(1))))
    assert not torch.equal(e1, torch.cat(list(b.epoch(2))))
    assert sorted((e1 * 255).round().flatten().tolist()) == list(range(100))
    rest = torch.cat(list(b.epoch(1, start=2)))
    assert torch.equal(rest, e1[32:])
    r0 = list(b.epoch(0, 0, 2))
    r1 = list(b.epoch(0, 1, 2))
    assert sum(map(len, r0)) == sum(map(len, r1)) == 50
    assert not set(torch.cat(r0).flatten().tolist()) & set(torch.cat(r1).flatten().tolist())
    # global batch i of two ranks with batch 8 == batch i of one process with batch 16
    single = list(TensorBatches(data, 16, seed=3).epoch(0))
    b8 = TensorBatches(data, 8, seed=3)
    for i, (x0, x1) in enumerate(zip(b8.epoch(0, 0, 2), b8.epoch(0, 1, 2), strict=True)):
        if i < 6:
            assert torch.equal(torch.cat([x0, x1]), single[i])


def test_float_data_in_0_1_is_batched_as_it_is_not_divided_again():
    data = torch.rand(20, 1, 3, 3)
    batches = torch.cat(list(TensorBatches(data, 8, seed=3, shuffle=False).epoch(0)))
    assert torch.equal(batches, data)


def test_small_data_is_converted_once_and_gives_the_same_batches():
    data = torch.randint(0, 256, (50, 1, 6, 6), dtype=torch.uint8)
    cached = TensorBatches(data, 8, seed=3)
    streamed = TensorBatches(data, 8, seed=3, float_cache_mb=0)  # too small a budget: per batch
    a, b = list(cached.epoch(1)), list(streamed.epoch(1))
    assert cached.float_data() is not None and streamed.float_data() is None
    assert len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    a[0].mul_(0)  # a batch is a copy: changing it in place leaves the cache alone
    assert torch.equal(next(cached.epoch(1)), b[0])


def test_a_path_is_an_image_folder_or_one_image_file(tmp_path):
    from aevision.data.folder import load_path
    from aevision.data.loading import check_one_size

    Image.fromarray(np.zeros((6, 5), dtype=np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    one = load_path(tmp_path / "a.png", 1, None)
    assert one.images.shape == (1, 1, 6, 5) and one.files == [str(tmp_path / "a.png")]
    assert len(load_path(tmp_path, 1, (4, 4))) == 1  # the folder: bad.png skipped
    with pytest.raises(DataError, match=r"bad\.png: "):
        load_path(tmp_path / "bad.png", 1, None)
    with pytest.raises(DataError, match="nothing: no such file or folder"):
        load_path(tmp_path / "nothing", 1, None)
    images = [("a", torch.zeros(1, 6, 5)), ("b", torch.zeros(1, 6, 5)), ("c", torch.zeros(1, 4, 4))]
    with pytest.raises(DataError, match=r"^x: images differ in size \(most are 6x5, c is 4x4\)"):
        check_one_size("x", images)


def test_channels_are_guessed_from_every_class_folder_and_grey_is_said(tmp_path, caplog, monkeypatch):
    """A first class folder of grey images no longer decides for the colour ones after it (the
    headers are sampled across the whole listing); a grey guess is one line naming data.channels."""
    import logging

    from aevision.data import loading

    monkeypatch.setattr(loading, "CHANNEL_SAMPLE", 16)  # fewer headers than files: the spread sample
    for c, mode, n in (("a_grey", "L", 70), ("b_colour", "RGB", 3)):
        (tmp_path / c).mkdir()
        for i in range(n):
            Image.new(mode, (6, 6), 90).save(tmp_path / c / f"{i:03d}.png")
    with caplog.at_level(logging.INFO, logger="aevision"):
        assert load_folder(tmp_path).images.shape[1] == 3
        assert "greyscale" not in caplog.text
        for p in (tmp_path / "b_colour").iterdir():
            Image.new("L", (6, 6), 90).save(p)
        assert load_folder(tmp_path).images.shape[1] == 1
    assert "reading the images as greyscale (1 channel): the 16 image headers read are all grey; " \
           "data.channels=3" in caplog.text


def test_a_broken_link_is_counted_among_the_skipped_files(tmp_path):
    for folder in (tmp_path / "flat", tmp_path / "classes" / "a"):
        folder.mkdir(parents=True)
        Image.new("L", (6, 6)).save(folder / "ok.png")
        (folder / "gone.png").symlink_to(tmp_path / "nowhere.png")
    for root in (tmp_path / "flat", tmp_path / "classes"):
        data = load_folder(root)
        assert len(data) == 1 and [s.reason for s in data.skipped] == [
            "a link to nothing (its target was moved or deleted)"]
