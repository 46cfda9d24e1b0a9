"""``prepare``: any dataset aevision reads, written once as litdata chunks (``shards:PATH``).

A folder (``PATH`` or ``folder:PATH``) is listed, split and decoded a block of files at a time,
so a folder larger than memory is prepared in bounded memory; every other dataset (named sets,
``crops:``, ``segfolder:`` and the other segmentation sets, whose masks travel with the images)
is loaded as the project loads it, then written. Validation is carved here, seeded
(``val_fraction``), so that every run streaming the shards sees the same held-out images.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from aevision.config import DataConfig
from aevision.data import SEG_DATASETS, load_dataset, load_segmentation
from aevision.data.folder import split_folders
from aevision.data.folder_stream import FolderListing, decode_blocks, list_folder
from aevision.data.imageset import Skipped
from aevision.data.shards import MANIFEST, SPLITS, ShardInfo, is_url, item, write_info, write_split
from aevision.data.splits import permutation
from aevision.errors import AevisionError
from aevision.io import user_path

log = logging.getLogger(__name__)
Tick = Callable[..., None]  # tick(images done) or tick(0, total=images to write)


@dataclass
class PrepareResult:
    out: Path
    info: ShardInfo
    seconds: float
    skipped: list[Skipped] = field(default_factory=list)


def prepare(source: str, out: str | Path, *, image_size: Sequence[int] | None = None,
            channels: int | None = None, root: str | None = None, val_fraction: float = 0.1,
            seed: int = 0, chunk_bytes: str = "64MB", progress: bool = True,
            overwrite: bool = False, options: dict[str, Any] | None = None) -> PrepareResult:
    """Write ``source`` (a folder, or a dataset name as ``--dataset`` takes it) under ``out``:
    one litdata folder per split and ``aevision.json``. Images are decoded and brought to
    ``image_size`` (H, W) (a folder without it: the size of its first image, another size being an
    error); ``options`` are
    the dataset builder's own (``n_train``, ``size``, a folder's ``test_fraction``, ...). A plain
    folder is decoded a block at a time; one with its own splits (train/ + test/) or options is
    read whole, as ``folder:`` reads it, so the shards hold exactly its splits."""
    if is_url(str(out)):
        raise AevisionError(f"prepare: -o {out}: write to a local folder, then copy it to object storage "
                            f"(e.g. `aws s3 sync`); training streams it from the URL")
    out = Path(out)
    if (out / MANIFEST).exists() and not overwrite:
        raise AevisionError(f"prepare: {out} already holds a prepared dataset (use --overwrite)")
    if not 0.0 <= val_fraction < 1.0:
        raise AevisionError(f"prepare: --val-fraction {val_fraction}: expected a fraction in [0, 1)")
    for split in SPLITS:  # an overwritten dataset leaves no chunk behind
        shutil.rmtree(out / split, ignore_errors=True)
    (out / MANIFEST).unlink(missing_ok=True)
    start = time.perf_counter()
    with _bar(progress) as tick:
        folder = _folder_path(source)
        if folder is not None and not options and split_folders(folder) is None:
            info, skipped = _prepare_folder(folder, out, image_size, channels, val_fraction, seed,
                                            chunk_bytes, tick)
        else:  # a dataset, or a folder with its own splits or options (test_fraction): read whole
            name = source if folder is None else f"folder:{folder}"
            cfg = DataConfig(name=name, root=root, channels=channels, options=dict(options or {}),
                             image_size=list(image_size) if image_size else None, val_fraction=val_fraction)
            info, skipped = _prepare_dataset(cfg, out, seed, chunk_bytes, tick)
    write_info(out, info)
    return PrepareResult(out, info, round(time.perf_counter() - start, 3), skipped)


def _folder_path(source: str) -> Path | None:
    name, _, arg = source.partition(":")
    if name == "folder" and arg:
        return user_path(arg)
    path = user_path(source)
    return path if path.is_dir() else None


def _prepare_folder(folder: Path, out: Path, image_size: Sequence[int] | None, channels: int | None,
                    val_fraction: float, seed: int, chunk_bytes: str, tick: Tick
                    ) -> tuple[ShardInfo, list[Skipped]]:
    listing = list_folder(folder.resolve(), channels, image_size)
    n = len(listing.files)
    tick(0, total=n)
    order = permutation(n, seed, 7)
    n_val = round(val_fraction * n) if n > 1 else 0
    parts = {"val": order[:n_val].sort().values.tolist(), "train": order[n_val:].sort().values.tolist()}
    counts = {split: write_split(out / split, _folder_items(listing, idx, tick), chunk_bytes)
              for split, idx in parts.items() if idx}
    if not counts.get("train"):
        raise AevisionError(f"prepare: folder:{folder}: no readable image in the training split")
    info = ShardInfo(str(out), listing.image_shape, counts, listing.classes, source=f"folder:{folder}")
    return info, listing.skipped


def _folder_items(listing: FolderListing, indices: Sequence[int], tick: Tick) -> Iterator[dict[str, Any]]:
    written = 0
    for block in decode_blocks(listing, indices):
        for i, image in block:
            label = listing.labels[i] if listing.labels is not None else None
            yield item(written, image.numpy(), label, str(listing.files[i]))
            written += 1
        tick(len(block))


def _prepare_dataset(cfg: DataConfig, out: Path, seed: int, chunk_bytes: str, tick: Tick
                     ) -> tuple[ShardInfo, list[Skipped]]:
    seg = cfg.name.partition(":")[0] in SEG_DATASETS
    splits: Any = load_segmentation(cfg, seed) if seg else load_dataset(cfg, seed)
    tick(0, total=sum(len(getattr(splits, s)) for s in SPLITS if getattr(splits, s) is not None))
    counts = {}
    for split in SPLITS:
        data = getattr(splits, split)
        if data is not None and len(data):
            counts[split] = write_split(out / split, _set_items(data, tick), chunk_bytes)
    train = splits.train
    classes = getattr(train, "classes", None) or None
    info = ShardInfo(str(out), tuple(train.images.shape[1:]), counts, classes, masks=seg,  # type: ignore[arg-type]
                     source=cfg.name)
    return info, list(getattr(train, "skipped", []))


def _set_items(data: Any, tick: Tick) -> Iterator[dict[str, Any]]:
    """The records of an in-memory ImageSet or SegSet (images, labels, masks, files)."""
    images = data.images.numpy()
    labels = getattr(data, "labels", None)
    masks = getattr(data, "masks", None)
    files = data.files
    for i in range(len(images)):
        label = int(labels[i]) if isinstance(labels, torch.Tensor) else None
        file = files[i] if files else f"{data.name}#{i}"
        yield item(i, images[i], label, file, masks[i].numpy() if masks is not None else None)
        if (i + 1) % 256 == 0 or i + 1 == len(images):
            tick((i % 256) + 1)


class _bar:
    """A progress bar over images written (on stderr, when ``enabled``), as a ``tick(n)``."""

    def __init__(self, enabled: bool):
        self.progress = Progress(TextColumn("[bold]prepare"), BarColumn(), MofNCompleteColumn(),
                                 TimeRemainingColumn(), transient=True) if enabled else None

    def __enter__(self) -> Tick:
        if self.progress is None:
            return lambda n, total=None: None
        self.progress.start()
        task = self.progress.add_task("prepare", total=None)
        progress = self.progress

        def tick(n: int, total: int | None = None) -> None:
            progress.update(task, advance=n, **({"total": total} if total is not None else {}))

        return tick

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.stop()
