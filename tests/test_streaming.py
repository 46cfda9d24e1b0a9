"""Streaming data: ``prepare`` writes litdata chunks, ``shards:`` reads them, StreamBatches streams."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aevision.config import DataConfig
from aevision.data import load_dataset
from aevision.data.shards import read_info
from aevision.data.streaming import StreamBatches
from aevision.errors import DataError
from aevision.tasks.prepare import prepare


def photo_folder(root: Path, per_class: int = 40, size: int = 12) -> Path:
    """Class folders ``a`` and ``b`` of JPEGs whose pixel values encode nothing in particular."""
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


@pytest.fixture()
def shards(tmp_path):
    folder = photo_folder(tmp_path / "photos")
    return prepare(str(folder), tmp_path / "shards", val_fraction=0.2, progress=False).info


def test_prepare_writes_each_split_with_labels_and_files(shards, tmp_path):
    assert shards.counts == {"val": 16, "train": 64}
    assert shards.image_shape == (3, 12, 12) and shards.classes == ["a", "b"]
    splits = load_dataset(DataConfig(name=f"shards:{shards.path}"), seed=0)
    train, val = splits.train, splits.val
    assert len(train) == 64 and len(val) == 16 and splits.test is None
    assert not set(train.files) & set(val.files)  # validation carved once, at prepare time
    # each image came with its own file and label, decoded as the folder loader decodes it
    for i in (0, 17, 63):
        path = Path(train.files[i])
        assert train.labels[i] == ["a", "b"].index(path.parent.name)
        assert torch.equal(train.images[i], torch.from_numpy(np.asarray(Image.open(path))).permute(2, 0, 1))


def test_prepare_refuses_to_replace_a_prepared_folder(shards, tmp_path):
    with pytest.raises(Exception, match="already holds a prepared dataset"):
        prepare(str(tmp_path / "photos"), shards.path, progress=False)


def test_masks_travel_with_the_images_of_a_segmentation_set(tmp_path):
    info = prepare("shapes-seg", tmp_path / "seg", progress=False, val_fraction=0.25,
                   options={"n_train": 16, "n_test": 4, "size": 16}).info
    assert info.masks and info.counts == {"train": 12, "test": 4, "val": 4}
    batches = StreamBatches(info.split_path("train"), 4, shuffle=False, targets="mask")
    x, y = next(batches.epoch(0))
    assert x.shape == (4, 3, 16, 16) and y.shape == (4, 16, 16) and y.dtype == torch.uint8
    assert int(y.max()) > 0  # shapes drawn, not an empty mask


def test_one_epoch_streams_every_training_image_once_as_floats(shards):
    batches = StreamBatches(shards.split_path("train"), 10, seed=3, targets="label")
    seen = list(batches.raw_epoch(0))
    indices = torch.cat([b["index"] for b in seen])
    assert sorted(indices.tolist()) == list(range(64))
    x, y = next(batches.epoch(0))
    assert x.dtype == torch.float32 and float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert x.shape == (10, 3, 12, 12) and y.dtype == torch.long
    assert len(batches) == 7


def test_the_order_is_shuffled_per_epoch_and_resumes_exactly(shards):
    batches = StreamBatches(shards.split_path("train"), 8, seed=3, drop_last=True, targets="label")
    epoch1 = [y for _, y in batches.epoch(1)]
    again = [y for _, y in batches.epoch(1)]
    assert all(torch.equal(a, b) for a, b in zip(epoch1, again, strict=True))
    epoch2 = [y for _, y in batches.epoch(2)]
    order = lambda raw: torch.cat([b["index"] for b in raw])  # noqa: E731
    assert not torch.equal(order(batches.raw_epoch(1)), order(batches.raw_epoch(2)))
    resumed = [y for _, y in batches.epoch(1, start=3)]
    assert len(resumed) == len(epoch1) - 3
    assert all(torch.equal(a, b) for a, b in zip(epoch1[3:], resumed, strict=True))
    assert len(epoch2) == len(epoch1) == 8


def test_ranks_read_disjoint_shards(shards):
    batches = StreamBatches(shards.split_path("train"), 8, seed=3)
    seen = [torch.cat([b["index"] for b in batches.raw_epoch(0, rank, 2)]) for rank in (0, 1)]
    assert len(seen[0]) == len(seen[1]) == 32  # equal work on each rank
    assert not set(seen[0].tolist()) & set(seen[1].tolist())
    assert sorted(torch.cat(seen).tolist()) == list(range(64))
    assert batches.num_batches(2) == 4


def test_a_damaged_chunk_is_a_one_line_error_naming_it(shards):
    train = Path(shards.split_path("train"))
    chunk = sorted(train.glob("chunk-*.bin"))[0]
    chunk.write_bytes(chunk.read_bytes()[:40])  # truncated
    batches = StreamBatches(str(train), 8, shuffle=False)
    with pytest.raises(DataError) as e:
        list(batches.epoch(0))
    assert str(train) in str(e.value) and "\n" not in str(e.value)


def test_a_folder_without_a_manifest_says_how_to_make_one(tmp_path):
    with pytest.raises(DataError, match="aevision prepare"):
        read_info(str(tmp_path))


def test_prepare_command_writes_shards_of_a_named_dataset(tmp_path, capsys):
    from aevision.cli import main

    code = main(["prepare", "shapes", "-o", str(tmp_path / "s"), "--no-progress", "n_train=20",
                 "n_test=5", "size=8"])
    assert code == 0
    counts = read_info(str(tmp_path / "s")).counts
    assert counts["train"] + counts["val"] == 20 and counts["test"] == 5 and counts["val"] >= 1
    assert f"train {counts['train']}, val {counts['val']}, test 5" in capsys.readouterr().out


# --- pretraining from streamed shards -------------------------------------------------------------


def shapes_shards(tmp_path, n_train: int = 256) -> str:
    out = tmp_path / "shapes-shards"
    prepare("shapes", out, progress=False, val_fraction=0.125,
            options={"n_train": n_train, "n_test": 0, "size": 12})
    return str(out)


def stream_config(tmp_path, path: str, name: str, **train):
    return {"seed": 0, "output_dir": str(tmp_path / name),
            "data": {"name": f"shards:{path}", "memory": 0, "workers": 0},
            "model": {"name": "conv", "channels": [8, 16], "code_dim": 16},
            "train": {"epochs": 2, "batch_size": 16, "progress": False, **train}}


def test_pretrain_streams_shards_larger_than_data_memory_and_says_so(tmp_path, caplog, one_thread):
    import logging

    from aevision.tasks.pretrain import pretrain

    path = shapes_shards(tmp_path, 128)
    with caplog.at_level(logging.INFO, logger="aevision"):
        streamed = pretrain(stream_config(tmp_path, path, "streamed"))
    assert "streaming with 0 loader processes" in caplog.text and "(data.memory)" in caplog.text
    n_train = streamed.data.counts["train"]  # the manifest: nothing was read whole
    assert n_train + streamed.data.counts["val"] == 128
    assert [h["step"] for h in streamed.history] == [n_train // 16, 2 * (n_train // 16)]
    assert streamed.history[1]["train_loss"] < streamed.history[0]["train_loss"]
    summary = (tmp_path / "streamed" / "summary.json").read_text()
    assert '"streamed": true' in summary
    caplog.clear()
    cfg = stream_config(tmp_path, path, "in-memory")
    cfg["data"]["memory"] = None  # the default budget, a quarter of RAM, holds 112 tiny images
    with caplog.at_level(logging.INFO, logger="aevision"):
        in_memory = pretrain(cfg)
    assert "reading it into memory" in caplog.text and "1/4 of" in caplog.text
    assert len(in_memory.data.train) == n_train and len(in_memory.data.val) == 128 - n_train


def test_streaming_refuses_settings_it_cannot_honour(tmp_path):
    from aevision.errors import ConfigError
    from aevision.tasks.pretrain import pretrain

    cfg = stream_config(tmp_path, shapes_shards(tmp_path, 32), "x")
    cfg["data"]["image_size"] = [8, 8]
    with pytest.raises(ConfigError, match=r"data\.image_size"):
        pretrain(cfg)
