#!/usr/bin/env python
"""Streaming a folder larger than the memory budget: peak RSS, data wait, loader and training speed.

Generates a folder of ``--images`` 64x64 JPEGs (10 class folders) in ``--work`` (not the repo)
and a second one of ``--subset`` images, prepares both with ``aevision prepare``, then measures:

- ``aevision pretrain`` of the default conv streamed from the big set's shards with
  ``data.memory`` a quarter of its decoded size and 2 loader processes: peak RSS of the whole
  process tree (loader processes included, sampled from /proc), data-wait fraction, images/s;
- one epoch of the loader alone (StreamBatches over the shards, and FolderBatches decoding the
  plain folder) against torchvision ``ImageFolder`` + ``DataLoader``, same workers and batch;
- training on the subset (which fits): streamed (``data.memory=0``), in memory, and from
  ``ImageFolder`` through the same Trainer;
- the DDP and kill -9 tests of tests/test_streaming.py, run here, pass or fail.

    python bench/streaming.py                          # 200,000 images (hours on 2 shared cores)
    python bench/streaming.py --images 2000 --subset 1000 --out /tmp/streaming.json   # a quick proof
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import common
from aevision.config import TrainConfig
from aevision.data.folder_batches import FolderBatches
from aevision.data.folder_stream import list_folder
from aevision.data.streaming import StreamBatches
from aevision.engine import Trainer
from aevision.models import build_model
from aevision.tasks.prepare import prepare

ROOT = Path(__file__).resolve().parent.parent
BATCH, WORKERS, SIZE = 256, 2, 64
TESTS = {"ddp_disjoint_test": "test_under_ddp_each_rank_streams_disjoint_shards_covering_the_set",
         "kill_resume_identical":
             "test_sigkill_mid_epoch_while_streaming_then_resume_gives_the_uninterrupted_weights"}


def make_folder(root: Path, n: int, seed: int) -> Path:
    """``n`` smooth random 64x64 JPEGs in 10 class folders (skipped when already there)."""
    if (root / "done").exists():
        return root
    rng = np.random.default_rng(seed)
    for i in range(n):
        low = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        img = Image.fromarray(low).resize((SIZE, SIZE), Image.Resampling.BICUBIC)
        folder = root / f"class{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        img.save(folder / f"{i:07d}.jpg", quality=90)
    (root / "done").write_text(str(n))
    return root


def tree_memory_mib(pid: int) -> tuple[float, float]:
    """Resident memory of ``pid`` and all its descendants, in MiB (from /proc): the sum of RSS
    (pages shared by forked loader processes counted in each) and of PSS (shared pages split)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    rss = pss = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            lines = Path(f"/proc/{p}/smaps_rollup").read_text().splitlines()[1:]
            fields = dict(ln.split(":", 1) for ln in lines)
        except (OSError, ValueError):
            continue
        rss += int(fields.get("Rss", "0 kB").split()[0])
        pss += int(fields.get("Pss", "0 kB").split()[0])
    return rss / 1024, pss / 1024


def pretrain_cli(args: list[str]) -> tuple[list[float], subprocess.CompletedProcess]:
    """``aevision pretrain ARGS`` in a child process; its tree's peak [RSS, PSS] (MiB) and result."""
    proc = subprocess.Popen([sys.executable, "-m", "aevision", "pretrain", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    peak = [0.0, 0.0]

    def sample() -> None:
        while proc.poll() is None:
            peak[:] = [max(a, b) for a, b in zip(peak, tree_memory_mib(proc.pid), strict=True)]
            time.sleep(0.2)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    out, err = proc.communicate()
    watcher.join()
    done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    if proc.returncode != 0:
        last = err.strip().splitlines()[-1] if err.strip() else proc.returncode
        raise SystemExit(f"pretrain failed: {last}")
    return [round(v, 1) for v in peak], done


def loader_speed(batches) -> float:
    """Images/s of one epoch of ``batches`` (an iterable of image batches), after one warm batch."""
    it = iter(batches)
    next(it)
    n, start = 0, time.perf_counter()
    for b in it:
        n += len(b[0] if isinstance(b, (list, tuple)) else b)
    return round(n / (time.perf_counter() - start), 1)


def imagefolder_loader(folder: Path, shuffle: bool = True):
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import PILToTensor

    return torch.utils.data.DataLoader(ImageFolder(str(folder), transform=PILToTensor()), batch_size=BATCH,
                                       shuffle=shuffle, num_workers=WORKERS, drop_last=True)


class LoaderBatches:
    """A torchvision DataLoader under the Trainer's batches contract (the baseline's training)."""

    def __init__(self, loader):
        self.loader, self.batch_size, self.drop_last = loader, BATCH, True
        self.channels_last, self.images_per_item = False, 1

    def num_batches(self, world_size: int = 1) -> int:
        return len(self.loader)

    def shard_size(self, world_size: int = 1) -> int:
        return len(self.loader) * BATCH

    def to(self, device):
        return self

    def epoch(self, epoch: int, rank: int = 0, world_size: int = 1, start: int = 0):
        for x, _ in self.loader:
            yield x.float() / 255


def train_speed(batches, out: Path, epochs: int = 3) -> float:
    """Images/s of the default conv through the Trainer: the mean of its epochs after the first."""
    model = build_model("conv", (3, SIZE, SIZE), {}, [], "mse")
    cfg = TrainConfig(epochs=epochs, batch_size=BATCH, progress=False, accelerator="cpu")
    fit = Trainer(cfg, out).fit(model, batches, None)
    speeds = [h["images_per_s"] for h in fit.history[1:]]
    return round(sum(speeds) / len(speeds), 1)


def subset_speeds(shards: str, folder: Path, work: Path) -> dict:
    """Training on the subset: streamed shards, the same shards in memory, ImageFolder."""
    from aevision.config import DataConfig
    from aevision.data import load_dataset
    from aevision.data.batches import TensorBatches

    def stream(workers: int) -> StreamBatches:
        return StreamBatches(f"{shards}/train", BATCH, drop_last=True, workers=workers)

    memory = TensorBatches(load_dataset(DataConfig(name=f"shards:{shards}"), 0).train.images, BATCH,
                           drop_last=True)
    # on 2 cores, loader processes take CPU from the training threads: reading in the training
    # process itself (data.workers=0) is measured beside the 2 workers, and the faster one counts
    by_workers = {w: train_speed(stream(w), work / f"t-stream{w}") for w in (WORKERS, 0)}
    best = max(by_workers, key=by_workers.__getitem__)
    return {"images_per_s_subset": by_workers[best], "subset_stream_workers": best,
            "images_per_s_subset_by_workers": {str(w): v for w, v in by_workers.items()},
            "in_memory_images_per_s": train_speed(memory, work / "t-memory"),
            "torchvision_imagefolder_images_per_s": train_speed(LoaderBatches(imagefolder_loader(folder)),
                                                                work / "t-imagefolder")}


def run_tests() -> dict:
    out = {}
    for key, name in TESTS.items():
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               f"tests/test_streaming.py::{name}"], cwd=ROOT, capture_output=True, text=True)
        out[key] = proc.returncode == 0
    return out


def main() -> None:
    p = common.parser(__doc__, "streaming.json")
    p.add_argument("--images", type=int, default=200_000)
    p.add_argument("--subset", type=int, default=20_000)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "aevision-streaming-bench"))
    p.add_argument("--no-tests", action="store_true", help="skip the DDP and kill -9 tests")
    args = p.parse_args()
    started, work = time.time(), Path(args.work)
    big, small = make_folder(work / "big", args.images, 0), make_folder(work / "small", args.subset, 1)
    shards = {}
    for name, folder in (("big", big), ("small", small)):
        shards[name] = str(work / f"{name}-shards")
        if not Path(shards[name], "aevision.json").exists():
            prepare(str(folder), shards[name], val_fraction=0.01, progress=False)
    result = streamed_run(shards["big"], big, work, args.epochs)
    result.update(subset_speeds(shards["small"], small, work))
    if not args.no_tests:
        result.update(run_tests())
    result["command"] = common.command("streaming.py")
    result.update(common.provenance(started, common.SHARED, load_average=True))
    common.publish(args.out, result, indent=1)


def streamed_run(shards: str, folder: Path, work: Path, epochs: int) -> dict:
    """The big set: decoded size, budget, the streamed pretrain's RSS and speed, loader speeds."""
    from aevision.data.shards import read_info

    info = read_info(shards)
    decoded = info.decoded_bytes("train")
    budget = decoded // 4
    peak, _ = pretrain_cli(["--dataset", f"shards:{shards}", "--epochs", str(epochs), "--no-progress",
                            "--batch-size", str(BATCH), "--accelerator", "cpu", "-o", str(work / "run"),
                            "--overwrite", f"data.memory={budget / 2**30}", f"data.workers={WORKERS}"])
    last = json.loads((work / "run" / "summary.json").read_text())["fit"]["history"][-1]
    listing = list_folder(folder, 3, None)
    return {
        "images": info.counts["train"], "decoded_bytes": decoded, "memory_budget_bytes": budget,
        "peak_rss_mib": peak[0], "peak_pss_mib": peak[1], "data_wait_fraction": last["data_wait_fraction"],
        "images_per_s": last["images_per_s"],
        "loader_images_per_s": loader_speed(
            StreamBatches(f"{shards}/train", BATCH, workers=WORKERS).epoch(0)),
        "folder_stream_loader_images_per_s": loader_speed(
            FolderBatches(listing, range(len(listing.files)), BATCH, workers=WORKERS).epoch(0)),
        "torchvision_imagefolder_loader_images_per_s": loader_speed(imagefolder_loader(folder)),
    }


if __name__ == "__main__":
    main()
