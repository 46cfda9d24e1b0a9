"""Streaming data: ``prepare`` writes litdata chunks, ``shards:`` reads them, StreamBatches streams."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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
from conftest import assert_kill_and_resume_is_exact


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


def test_prepare_refuses_to_replace_a_prepared_folder_unless_overwriting(shards, tmp_path):
    with pytest.raises(Exception, match="already holds a prepared dataset"):
        prepare(str(tmp_path / "photos"), shards.path, progress=False)
    info = prepare("shapes", shards.path, progress=False, overwrite=True, val_fraction=0.0,
                   options={"n_train": 10, "n_test": 0, "size": 8}).info
    assert info.counts == {"train": 10}
    assert not Path(shards.path, "val").exists()  # nothing of the replaced set is left
    assert len(load_dataset(DataConfig(name=f"shards:{shards.path}", val_fraction=0.0), 0).train) == 10


def test_masks_travel_with_the_images_of_a_segmentation_set(tmp_path):
    info = prepare("shapes-seg", tmp_path / "seg", progress=False, val_fraction=0.25,
                   options={"n_train": 16, "n_test": 4, "size": 16}).info
    assert info.masks and info.counts == {"train": 12, "test": 4, "val": 4}
    batches = StreamBatches(info.split_path("train"), 4, shuffle=False, targets="mask")
    x, y = next(batches.epoch(0))
    assert x.shape == (4, 3, 16, 16) and y.shape == (4, 16, 16) and y.dtype == torch.uint8
    assert int(y.max()) > 0  # shapes drawn, not an empty mask
    from aevision.data import load_segmentation

    seg = load_segmentation(DataConfig(name=f"shards:{info.path}"), seed=0)  # what `segment` reads
    direct = load_segmentation(DataConfig(name="shapes-seg", val_fraction=0.25,
                                          options={"n_train": 16, "n_test": 4, "size": 16}), seed=0)
    assert torch.equal(seg.test.masks, direct.test.masks) and torch.equal(seg.test.images, direct.test.images)
    assert seg.train.classes == direct.train.classes and len(seg.val) == 4
    images_only = load_dataset(DataConfig(name=f"shards:{info.path}"), seed=0).train
    assert images_only.labels is None and images_only.classes is None


def test_one_epoch_streams_every_training_image_once_as_floats(shards):
    batches = StreamBatches(shards.split_path("train"), 10, seed=3, targets="label")
    seen = list(batches.raw_epoch(0))
    indices = torch.cat([b["index"] for b in seen])
    assert sorted(indices.tolist()) == list(range(64))
    x, y = next(batches.epoch(0))
    assert x.dtype == torch.float32 and float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert x.shape == (10, 3, 12, 12) and y.dtype == torch.long
    assert len(batches) == 7
    batches.batch_size = 32  # as train.auto_batch_size halves it: the count follows
    assert len(batches) == 2 and len(list(batches.epoch(0))) == 2


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

    run = ["prepare", "shapes", "-o", str(tmp_path / "s"), "--no-progress", "n_train=12", "n_test=0",
           "size=8"]
    assert main(run) == 2  # -o is a folder: an existing one is refused for what it holds, not for being one
    assert "already holds a prepared dataset" in capsys.readouterr().err
    assert main([*run, "--overwrite"]) == 0
    assert "test" not in read_info(str(tmp_path / "s")).counts  # the replaced set had 5


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


# --- DDP and resuming ------------------------------------------------------------------------------


def numbered_shards(root: Path, n_train: int = 128, n_val: int = 32, size: int = 8) -> str:
    """Shards whose image ``i`` says ``i`` in its first pixel (channels 0, 1: i // 256, i % 256),
    smooth random pictures otherwise; small chunks, so that ranks and workers split them."""
    from aevision.data.shards import ShardInfo, item, write_info, write_split

    g = torch.Generator().manual_seed(0)

    def records(n: int):
        for i in range(n):
            low = torch.rand(3, 2, 2, generator=g)
            image = (torch.nn.functional.interpolate(low[None], size=(size, size), mode="bilinear")[0] * 255)
            image = image.round().to(torch.uint8)
            image[0, 0, 0], image[1, 0, 0] = i // 256, i % 256
            yield item(i, image.numpy(), None, f"image-{i}")

    counts = {split: write_split(root / split, records(n), chunk_bytes="4KB")
              for split, n in (("train", n_train), ("val", n_val))}
    write_info(root, ShardInfo(str(root), (3, size, size), counts, source="test"))
    return str(root)


def indices_of(x: torch.Tensor) -> list[int]:
    first = (x[:, :2, 0, 0] * 255).round().long()
    return (first[:, 0] * 256 + first[:, 1]).tolist()


def _rank_epoch(rank: int, world: int, path: str, port: int, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        batches = StreamBatches(path, 8, seed=5, shuffle=True, drop_last=True, workers=1)
        seen = [i for x in batches.epoch(0, rank, world) for i in indices_of(x)]
        Path(out, f"rank{rank}.txt").write_text(" ".join(map(str, seen)))
    finally:
        dist.destroy_process_group()


def test_under_ddp_each_rank_streams_disjoint_shards_covering_the_set(tmp_path):
    """Two gloo processes (litdata sees the process group): one epoch, every image once."""
    import socket

    import torch.multiprocessing as mp

    path = numbered_shards(tmp_path / "numbered", n_train=128) + "/train"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # forked, not spawned: no second import of torch per rank
    mp.start_processes(_rank_epoch, args=(2, path, port, str(tmp_path)), nprocs=2, join=True,
                       start_method="fork")
    seen = [[int(v) for v in (tmp_path / f"rank{r}.txt").read_text().split()] for r in (0, 1)]
    assert len(seen[0]) == len(seen[1]) == 64
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == list(range(128))


STREAM_RUN = ["--model", "conv", "--no-progress", "--accelerator", "cpu", "--lr", "3e-3",
              "model.channels=[8,16]", "model.code_dim=16", "data.memory=0"]


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "aevision", "pretrain", *args], capture_output=True,
                          text=True, env=env, timeout=600)


@pytest.mark.slow
def test_ddp_from_the_stream_follows_one_process_with_the_same_global_batch(tmp_path):
    path = numbered_shards(tmp_path / "numbered", n_train=256)
    base = ["--dataset", f"shards:{path}", "--epochs", "3", *STREAM_RUN, "data.workers=0"]
    one = _cli(*base, "--batch-size", "32", "-o", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr
    two = _cli(*base, "--batch-size", "16", "--devices", "2", "--strategy", "ddp",
               "-o", str(tmp_path / "two"))
    assert two.returncode == 0, two.stderr
    h1, h2 = (json.loads((tmp_path / n / "summary.json").read_text())["fit"]["history"]
              for n in ("one", "two"))
    assert [h["step"] for h in h1] == [h["step"] for h in h2] == [8, 16, 24]
    for a, b in zip(h1, h2, strict=True):  # other batches (litdata splits chunks per rank): noise only
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=0.15)
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=0.15)


@pytest.mark.slow
def test_sigkill_mid_epoch_while_streaming_then_resume_gives_the_uninterrupted_weights(tmp_path):
    path = numbered_shards(tmp_path / "numbered", n_train=192)
    run = ["--dataset", f"shards:{path}", "--epochs", "3", "--batch-size", "8", "--deterministic",
           *STREAM_RUN, "data.workers=2", "train.checkpoint_every_n_steps=5", "--reg", "denoising:sigma=0.2"]
    assert_kill_and_resume_is_exact(run, tmp_path, {**os.environ, "OMP_NUM_THREADS": "1"})


# --- streaming a plain folder ----------------------------------------------------------------------


def test_a_plain_folder_streams_in_the_in_memory_order_and_resumes_there(tmp_path):
    from aevision.data.batches import TensorBatches
    from aevision.data.folder_batches import FolderBatches
    from aevision.data.folder_stream import list_folder

    folder = photo_folder(tmp_path / "photos", per_class=20, size=12)
    listing = list_folder(folder, None, [8, 8])
    batches = FolderBatches(listing, range(40), 8, seed=2, workers=2)
    raw = list(batches.raw_epoch(1))
    order = torch.cat([r["index"] for r in raw])
    assert torch.equal(order, TensorBatches(torch.zeros(40, 1), 8, seed=2).indices(1))  # the same draw
    assert raw[0]["image"].shape == (8, 3, 8, 8)  # resized while decoding
    resumed = list(batches.raw_epoch(1, start=3))
    assert torch.equal(torch.cat([r["index"] for r in resumed]), order[24:])
    halves = [torch.cat([r["index"] for r in batches.raw_epoch(0, rank, 2)]) for rank in (0, 1)]
    assert sorted(torch.cat(halves).tolist()) == list(range(40))


def test_an_unreadable_file_in_a_streamed_folder_is_skipped_and_counted(tmp_path, caplog):
    from aevision.data.folder_batches import FolderBatches
    from aevision.data.folder_stream import list_folder

    folder = photo_folder(tmp_path / "photos", per_class=6)
    (folder / "a" / "3.png").write_bytes(b"not a png")
    listing = list_folder(folder, 3, [12, 12])
    batches = FolderBatches(listing, range(12), 4, shuffle=False)
    images = sum(len(x) for x in batches.epoch(0))
    assert images == 11 and [s.path for s in batches.skipped] == [str(folder / "a" / "3.png")]
    assert "3.png" in caplog.text


def test_a_folder_of_mixed_sizes_streamed_or_prepared_is_an_error_as_when_read_whole(tmp_path):
    """Without an image size, the first image's is the size, and another is an error naming it,
    not silently stretched; with one, every image is stretched to it."""
    from aevision.data.folder_batches import FolderBatches
    from aevision.data.folder_stream import list_folder

    folder = photo_folder(tmp_path / "photos", per_class=4, size=12)
    Image.new("RGB", (20, 12)).save(folder / "b" / "9.png")
    wrong = r"b/9\.png: a 12x20 image; the first is 12x12: set an image size \(prepare's --image-size"
    with pytest.raises(DataError, match=wrong):
        prepare(str(folder), tmp_path / "s", progress=False, val_fraction=0.0)
    with pytest.raises(DataError, match=wrong):
        list(FolderBatches(list_folder(folder, None, None), range(9), 3, shuffle=False).epoch(0))
    assert prepare(str(folder), tmp_path / "t", image_size=[12, 12], progress=False,
                   val_fraction=0.0).info.counts == {"train": 9}


def test_pretrain_streams_a_folder_larger_than_data_memory(tmp_path, caplog, one_thread):
    import logging

    from aevision.tasks.pretrain import pretrain

    folder = photo_folder(tmp_path / "photos", per_class=20, size=12)
    cfg = stream_config(tmp_path, "", "run")
    cfg["data"] = {"name": f"folder:{folder}", "memory": 0, "workers": 1, "val_fraction": 0.2}
    with caplog.at_level(logging.INFO, logger="aevision"):
        result = pretrain(cfg)
    assert "streaming with 1 loader processes" in caplog.text
    assert len(result.data.files) == 40 and [h["step"] for h in result.history] == [2, 4]  # 32 // 16
    assert result.history[-1]["val_loss"] is not None


# --- encode streams a folder larger than memory ------------------------------------------------------


def test_encode_streams_a_large_folder_into_npy_rows_naming_their_files(tmp_path, capsys):
    from aevision.api import load
    from aevision.cli import main
    from aevision.models import build_model, save_model

    folder = photo_folder(tmp_path / "photos", per_class=10, size=12)
    (folder / "b" / "7.png").write_bytes(b"broken")
    model = build_model("conv", (3, 12, 12), {"channels": [8], "code_dim": 6}, [], "mse")
    save_model(model, tmp_path / "model")
    out = tmp_path / "f.npy"
    code = main(["encode", str(tmp_path / "model"), str(folder), "-o", str(out), "--memory", "0",
                 "--workers", "1", "--batch-size", "4"])
    assert code == 0 and "streamed from folder:" in capsys.readouterr().out
    features = np.load(out)
    rows = json.loads(out.with_suffix(".rows.json").read_text())
    assert features.shape == (19, 6) and rows["rows"] == 19 and rows["streamed"]
    assert [s["path"] for s in rows["skipped"]] == [str(folder / "b" / "7.png")]
    # row i is the features of the file the rows say, as encoding it alone gives
    i = 13
    image = torch.from_numpy(np.asarray(Image.open(rows["files"][i]))).permute(2, 0, 1)
    alone = load(tmp_path / "model").encode(image[None].float() / 255)
    assert np.allclose(features[i], alone.detach().numpy()[0], atol=1e-5)
    assert rows["labels"][i] == ["a", "b"].index(Path(rows["files"][i]).parent.name)


def test_streamed_and_in_memory_encode_name_files_as_the_command_line_did(tmp_path, monkeypatch):
    """A relative folder gives relative file names in the rows either way (a streamed encode wrote
    resolved paths), so the two rows files of one folder agree."""
    from aevision.cli import main
    from aevision.models import build_model, save_model

    photo_folder(tmp_path / "photos", per_class=3, size=12)
    (tmp_path / "photos" / "a" / "x.png").write_bytes(b"broken")
    save_model(build_model("conv", (3, 12, 12), {"channels": [8], "code_dim": 6}, [], "mse"), tmp_path / "m")
    monkeypatch.chdir(tmp_path)
    rows = {}
    for name, memory in (("whole", []), ("streamed", ["--memory", "0", "--workers", "0"])):
        assert main(["encode", "m", "photos", "-o", f"{name}.npy", *memory]) == 0
        rows[name] = json.loads((tmp_path / f"{name}.rows.json").read_text())
    assert rows["streamed"]["streamed"] and rows["streamed"]["files"] == rows["whole"]["files"]
    assert rows["whole"]["files"][0] == str(Path("photos") / "a" / "0.png")
    assert [s["path"] for s in rows["streamed"]["skipped"]] == [str(Path("photos") / "a" / "x.png")]


def test_encode_streams_images_of_another_size_only_when_resize_says_stretch(tmp_path, capsys):
    from aevision.cli import main
    from aevision.models import build_model, save_model

    folder = photo_folder(tmp_path / "photos", per_class=3, size=12)
    Image.new("RGB", (20, 12)).save(folder / "b" / "9.png")
    save_model(build_model("conv", (3, 12, 12), {"channels": [8], "code_dim": 6}, [], "mse"), tmp_path / "m")
    out = tmp_path / "f.npy"
    run = ["encode", str(tmp_path / "m"), str(folder), "-o", str(out), "--memory", "0", "--workers", "0",
           "--batch-size", "2"]
    assert main(run) == 2  # met after two batches were written
    assert "9.png: a 12x20 image; the model takes 12x12: give --resize stretch" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "photos"]  # no partial features
    assert main([*run, "--resize", "crop"]) == 2
    assert "--resize: got 'crop', expected stretch: " in capsys.readouterr().err
    assert main([*run, "--resize", "stretch"]) == 0 and np.load(out).shape == (7, 6)
    # said and recorded as an in-memory encode says it (it was neither)
    assert "resized 1 of 7 images to 12x12 (stretched: the aspect ratio changed) from 12x20 (1)" in \
        capsys.readouterr().err
    rows = json.loads(out.with_suffix(".rows.json").read_text())
    assert rows["resized"] == {"to": [12, 12], "fit": "stretch", "from": {"12x20": 1}}
    assert rows["indices"] is None


def test_encode_streams_prepared_shards_by_split(shards, tmp_path, capsys):
    from aevision.cli import main
    from aevision.models import build_model, save_model

    save_model(build_model("conv", (3, 12, 12), {"channels": [8], "code_dim": 6}, [], "mse"), tmp_path / "m")
    out = tmp_path / "val.npy"
    code = main(["encode", str(tmp_path / "m"), "--dataset", f"shards:{shards.path}", "--split", "val",
                 "-o", str(out), "--memory", "0", "--workers", "0"])
    assert code == 0 and "streamed from shards:" in capsys.readouterr().out
    rows = json.loads(out.with_suffix(".rows.json").read_text())
    assert np.load(out).shape == (16, 6) and rows["split"] == "val" and len(rows["files"]) == 16
    assert rows["classes"] == ["a", "b"] and set(rows["labels"]) == {0, 1}


def test_anomaly_scores_a_large_folder_streamed_as_in_memory(tmp_path, capsys):
    import csv

    from aevision.cli import main
    from aevision.models import build_model, save_model

    folder = photo_folder(tmp_path / "photos", per_class=8, size=12)
    save_model(build_model("conv", (3, 12, 12), {"channels": [8], "code_dim": 6}, [], "mse"), tmp_path / "m")
    common = ["anomaly", str(tmp_path / "m"), str(folder), "--reference", str(folder / "a"), "--top", "3"]
    assert main([*common, "-o", str(tmp_path / "mem.csv")]) == 0
    assert main([*common, "-o", str(tmp_path / "str.csv"), "--memory", "0", "--workers", "1",
                 "--batch-size", "5", "--grid", str(tmp_path / "top.png")]) == 0
    def read(name):
        with open(tmp_path / name) as f:
            return {r["image"]: float(r["score"]) for r in csv.DictReader(f)}

    in_memory, streamed = read("mem.csv"), read("str.csv")
    assert set(in_memory) == set(streamed) and len(streamed) == 16
    assert all(abs(in_memory[f] - streamed[f]) < 1e-6 for f in streamed)
    assert (tmp_path / "top.png").is_file()


def test_index_streams_a_large_folder_to_the_same_gallery_as_in_memory(tmp_path):
    from aevision.models import build_model, save_model
    from aevision.tasks.gallery import index_gallery

    folder = photo_folder(tmp_path / "photos", per_class=6, size=12)
    save_model(build_model("conv", (3, 12, 12), {"channels": [8], "code_dim": 6}, [], "mse"), tmp_path / "m")
    in_memory = index_gallery(tmp_path / "m", str(folder), tmp_path / "i1")
    streamed = index_gallery(tmp_path / "m", str(folder), tmp_path / "i2", memory=0, workers=1, batch_size=5)
    assert streamed.meta["source"]["streamed"] and streamed.meta["files"] == in_memory.meta["files"]
    assert torch.equal(streamed.labels, in_memory.labels) and streamed.meta["classes"] == ["a", "b"]
    a, b = in_memory.index.reconstruct_n(0, 12), streamed.index.reconstruct_n(0, 12)
    assert np.allclose(a, b, atol=1e-5)
    from aevision.cli import main

    grid = tmp_path / "grid.png"  # neighbours read back one file at a time, not the whole gallery
    assert main(["search", str(tmp_path / "i2"), str(folder / "a"), "-k", "3", "--grid", str(grid)]) == 0
    assert grid.is_file()
    Image.new("RGB", (20, 12)).save(folder / "b" / "wide.png")  # stretched, as in memory: never an error
    assert index_gallery(tmp_path / "m", str(folder), tmp_path / "i3", memory=0, workers=0).index.ntotal == 13
