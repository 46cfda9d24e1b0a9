"""``shards:PATH``: a dataset optimized once into litdata chunks, read back or streamed.

``aevision prepare`` writes each split of a dataset (``train``, ``val``, ``test``) as its own
litdata folder under ``PATH`` (a local folder or an object-storage URL litdata reads), plus
``aevision.json``: the image shape, the count per split, the classes. Every item is one image
decoded at the prepared size, ``image`` (C, H, W) uint8, with its ``index`` in the split, its
``label`` (-1 when unlabelled) and, for segmentation sets, its ``mask`` (H, W) uint8; the file
each came from is line ``index`` of the split's ``files.txt``. Decoded pixels, not JPEG bytes:
a chunk is then read without decoding (see bench/streaming.py for the measured loader speeds),
at C x H x W bytes per image on disk.

A small prepared set is read whole into memory (this loader); a large one is streamed by
:class:`aevision.data.streaming.StreamBatches` (``pretrain`` picks, see ``data.memory``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aevision.data.imageset import ImageSet
from aevision.data.registry import DATASETS, Source, Splits, takes_argument
from aevision.data.segmentation import SEG_DATASETS
from aevision.data.segset import SegSet, SegSplits
from aevision.errors import DataError
from aevision.io import atomic_open

MANIFEST = "aevision.json"
FILES = "files.txt"
SPLITS = ("train", "val", "test")
FORMAT = 1


@dataclass(frozen=True)
class ShardInfo:
    """What ``aevision.json`` says about a prepared dataset."""

    path: str
    image_shape: tuple[int, int, int]
    counts: dict[str, int]  # images per split written
    classes: list[str] | None = None
    masks: bool = False
    source: str = ""
    format: int = FORMAT
    extra: dict[str, Any] = field(default_factory=dict)

    def split_path(self, split: str) -> str:
        return join(self.path, split)

    def decoded_bytes(self, split: str = "train") -> int:
        """Bytes the split takes decoded in memory (uint8 images, masks included)."""
        c, h, w = self.image_shape
        return self.counts.get(split, 0) * (c + (1 if self.masks else 0)) * h * w

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("path")
        d["image_shape"] = list(self.image_shape)
        return d


def join(base: str, name: str) -> str:
    """``base/name`` for a folder or a URL (``s3://bucket/x`` + ``train``)."""
    return f"{base.rstrip('/')}/{name}" if "://" in base else str(Path(base) / name)


def is_url(path: str) -> bool:
    return "://" in path


def read_text(path: str) -> str:
    """A small file from a folder or from object storage (through fsspec, as litdata reads it)."""
    if not is_url(path):
        return Path(path).read_text()
    import fsspec

    with fsspec.open(path, "r") as f:
        return f.read()


def read_info(path: str) -> ShardInfo:
    """The manifest of the prepared dataset at ``path``, or a one-line error naming it."""
    where = join(path, MANIFEST)
    try:
        d = json.loads(read_text(where))
    except FileNotFoundError:
        raise DataError(f"shards:{path}: no {MANIFEST} there (write one with `aevision prepare SOURCE "
                        f"-o {path}`)") from None
    except (OSError, ValueError) as e:
        raise DataError(f"shards:{path}: cannot read {MANIFEST} ({e})") from None
    if d.get("format") != FORMAT:
        raise DataError(f"{where}: format {d.get('format')!r}, expected {FORMAT}")
    d["image_shape"] = tuple(d["image_shape"])
    return ShardInfo(path=path, **d)


def data_fingerprint(info: ShardInfo) -> str:
    """SHA-256 of the manifest and every split's litdata index (chunk names, sizes, counts): what
    makes two streamed runs the same data, without reading the pixels."""
    h = hashlib.sha256(json.dumps(info.to_dict(), sort_keys=True).encode())
    for split in SPLITS:
        if info.counts.get(split):
            h.update(read_text(join(info.split_path(split), "index.json")).encode())
    return h.hexdigest()


# --- writing -----------------------------------------------------------------------------------


def write_split(out: Path, items: Iterable[dict[str, Any]], chunk_bytes: str = "64MB") -> int:
    """Write ``items`` (see the module notes) as litdata chunks into ``out``, their files in
    ``files.txt`` (line i: item i's); the count written."""
    from litdata.streaming.writer import BinaryWriter

    out.mkdir(parents=True, exist_ok=True)
    writer = BinaryWriter(str(out), chunk_bytes=chunk_bytes)
    n = 0
    with atomic_open(out / FILES, "w") as files:
        for n, record in enumerate(items, 1):
            # a file name stays out of the chunks: litdata stores a string that names an existing
            # file as that file's contents
            files.write(record.pop("file").replace("\n", " ") + "\n")
            writer[n - 1] = record
    writer.done()
    writer.merge()
    return n


def read_files(split_path: str) -> list[str]:
    """The file each item of a split came from, by index."""
    return read_text(join(split_path, FILES)).splitlines()


def item(index: int, image: torch.Tensor | np.ndarray, label: int | None, file: str,
         mask: torch.Tensor | np.ndarray | None = None) -> dict[str, Any]:
    """One record: the image (C, H, W) uint8, its index, label (-1: none), file and mask."""
    d: dict[str, Any] = {"index": index, "image": np.ascontiguousarray(np.asarray(image, np.uint8)),
                         "label": -1 if label is None else int(label), "file": file}
    if mask is not None:
        d["mask"] = np.ascontiguousarray(np.asarray(mask, np.uint8))
    # keys in sorted order: litdata 0.2.76 writes the leaves in insertion order but rebuilds the
    # dict in sorted order, which would hand one key another's leaf
    return {k: d[k] for k in sorted(d)}


def write_info(out: Path, info: ShardInfo) -> None:
    from aevision.io import write_json

    write_json(out / MANIFEST, info.to_dict())


# --- reading whole -----------------------------------------------------------------------------


def read_batches(path: str, batch_size: int = 512, workers: int = 0) -> Iterator[dict[str, Any]]:
    """The items of one split in order, collated in batches (``image`` (B, C, H, W) uint8, ...)."""
    from litdata import StreamingDataLoader, StreamingDataset

    try:
        ds = StreamingDataset(path, shuffle=False, drop_last=False)
    except (ValueError, FileNotFoundError, OSError) as e:
        raise DataError(f"shards:{path}: not a prepared split ({str(e).splitlines()[0]})") from None
    yield from StreamingDataLoader(ds, batch_size=batch_size, num_workers=workers)


def read_split(info: ShardInfo, split: str, masks: bool = False) -> ImageSet | SegSet | None:
    """One prepared split read whole into memory: the images, labels and files (with ``masks``:
    a SegSet, the masks with them)."""
    if not info.counts.get(split):
        return None
    images, labels, mask_parts = [], [], []
    for b in read_batches(info.split_path(split)):
        images.append(b["image"])
        labels.append(b["label"])
        if masks:
            mask_parts.append(b["mask"])
    files = read_files(info.split_path(split))
    name = f"shards:{info.path}"
    if masks:
        return SegSet(torch.cat(images), torch.cat(mask_parts), info.classes or [], name, files)
    label_tensor = torch.cat(labels).long() if info.classes and not info.masks else None
    classes = info.classes if not info.masks else None  # a segmentation set's classes are its masks'
    return ImageSet(torch.cat(images), label_tensor, classes, name, files)


def _train(info: ShardInfo, masks: bool = False) -> ImageSet | SegSet:
    train = read_split(info, "train", masks)
    if train is None:
        raise DataError(f"shards:{info.path}: the train split is empty")
    return train


@DATASETS.register("shards", "shards:PATH: a dataset written by `aevision prepare` (a folder or an "
                   "object-storage URL); streamed when larger than data.memory")
@takes_argument
def load_shards(source: Source) -> Splits:
    assert source.argument is not None
    info = read_info(source.argument)
    return Splits(train=_train(info), test=read_split(info, "test"), val=read_split(info, "val"))


@SEG_DATASETS.register("shards", "shards:PATH: a segmentation set written by `aevision prepare` "
                       "(images with their masks)")
@takes_argument
def load_seg_shards(source: Source) -> SegSplits:
    assert source.argument is not None
    info = read_info(source.argument)
    if not info.masks:
        raise DataError(f"shards:{info.path}: no masks there (prepared from {info.source or 'images'})")
    return SegSplits(train=_train(info, True), test=read_split(info, "test", True),  # type: ignore[arg-type]
                     val=read_split(info, "val", True))  # type: ignore[arg-type]
