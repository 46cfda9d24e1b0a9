"""``encode`` over a set larger than memory: streamed in batches, features written as they come.

A folder (one input folder) or prepared shards (``--dataset shards:PATH``) whose decoded images
exceed the memory budget (:func:`aevision.data.plan.memory_budget`, default a quarter of RAM)
are not decoded whole: batches are read in order (a folder's by loader processes), encoded, and
their rows written into the .npy as they come (a memory-mapped file, renamed into place at the
end). ``<name>.rows.json`` beside it says, as for in-memory inputs, which file each row came from
(and its label, the classes, the files skipped).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aevision.config import DataConfig
from aevision.data.folder_batches import FolderBatches
from aevision.data.folder_stream import FolderListing, list_folder
from aevision.data.imageset import to_float
from aevision.data.inputs import resize_note, resize_record
from aevision.data.plan import memory_budget
from aevision.data.shards import ShardInfo, read_files, read_info
from aevision.data.streaming import StreamBatches
from aevision.errors import AevisionError, ConfigError, DataError
from aevision.io import write_json
from aevision.models import Autoencoder
from aevision.tasks.model_outputs import rows_path


@dataclass
class StreamedInput:
    """What is streamed: prepared shards (one split) or a listed folder."""

    name: str
    rows: int
    shards: ShardInfo | None = None
    split: str = "train"
    listing: FolderListing | None = None
    folder: FolderBatches | None = None  # the folder's batches, once read: the files skipped

    def batches(self, batch_size: int, workers: int) -> Iterator[dict[str, Any]]:
        if self.shards is not None:
            return StreamBatches(self.shards.split_path(self.split), batch_size, shuffle=False,
                                 workers=workers).raw_epoch(0)
        assert self.listing is not None
        self.folder = FolderBatches(self.listing, range(self.rows), batch_size, shuffle=False,
                                    workers=workers)
        return self.folder.raw_epoch(0)

    def resized(self) -> Counter[tuple[int, int]]:
        """The sizes of the folder's images that were stretched to the listing's, once read."""
        return self.folder.resized if self.folder is not None else Counter()

    def image_size(self) -> tuple[int, int]:
        return self.listing.size if self.listing is not None else tuple(self.shards.image_shape[1:])  # type: ignore

    def resize_note(self) -> str | None:
        return resize_note(self.resized(), self.rows, self.image_size(), "stretch")

    def classes(self) -> list[str] | None:
        return self.shards.classes if self.shards is not None else self.listing.classes  # type: ignore

    def as_given(self, path: str) -> str:
        """A listed folder's file as the command line named the folder (``photos/a.png``, as an
        in-memory input is written, not its resolved path); other paths as they are."""
        if self.listing is None or not Path(path).is_relative_to(self.listing.root):
            return path
        return str(Path(self.name.partition(":")[2]) / Path(path).relative_to(self.listing.root))

    def files(self) -> list[str]:
        """Each row's source: a shard's recorded file names, or a listed folder's resolved paths."""
        if self.shards is not None:
            return read_files(self.shards.split_path(self.split))
        assert self.listing is not None
        return [str(f) for f in self.listing.files]


def streamed_input(dataset: str | None, inputs: list[str], split: str, shape: tuple[int, int, int],
                   memory: float | None = None, fit: str | None = None) -> StreamedInput | None:
    """The input to stream, or None when it fits ``memory`` GiB (default a quarter of RAM) or is
    not a single folder / ``shards:`` dataset. ``fit`` (``--resize``) brings a folder's images of
    another size to the model's: streamed, only ``stretch``."""
    budget, _ = memory_budget(DataConfig(memory=memory))
    c, h, w = shape
    if dataset is not None and dataset.startswith("shards:"):
        info = read_info(dataset.partition(":")[2])
        if split not in info.counts:
            raise AevisionError(f"--split {split}: {dataset} has the splits {', '.join(info.counts)}")
        if info.image_shape != shape:
            raise DataError(f"{dataset}: images of {info.image_shape}, the model takes {shape}")
        n = info.counts[split]
        return StreamedInput(dataset, n, shards=info, split=split) if n * c * h * w > budget else None
    if dataset is None and len(inputs) == 1 and Path(inputs[0]).is_dir():
        exact = None if fit == "stretch" else f"the model takes {h}x{w}: give --resize stretch"
        listing = list_folder(Path(inputs[0]).resolve(), c, (h, w), exact=exact)
        if listing.decoded_bytes() > budget:
            if fit not in (None, "stretch"):
                raise ConfigError("--resize", fit, f"stretch: {inputs[0]} is larger than memory and "
                                  f"streamed, which stretches only (or raise --memory to read it whole)")
            return StreamedInput(f"folder:{inputs[0]}", len(listing.files), listing=listing)
    return None


@torch.no_grad()
def write_streamed_features(model: Autoencoder, source: StreamedInput, out: str | os.PathLike[str], *,
                            batch_size: int = 512, device: str = "cpu", workers: int = 2,
                            model_path: str | None = None) -> tuple[int, int]:
    """Encode ``source`` batch by batch into ``out`` (.npy) and its rows file; (rows, D)."""
    out = Path(out)
    if out.suffix.lower() != ".npy":
        raise AevisionError(f"-o {out}: features of a streamed input are written as .npy")
    tmp = out.with_name(f".{out.name}.tmp")
    model.eval().to(device)
    features: Any = None
    indices, labels, row = [], [], 0
    try:
        for raw in source.batches(batch_size, workers):
            z = model.encode(to_float(raw["image"].to(device))).float().cpu().numpy()
            if features is None:
                features = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32,
                                                     shape=(source.rows, z.shape[1]))
            features[row:row + len(z)] = z
            row += len(z)
            indices += raw["index"].tolist()
            labels += raw["label"].tolist()
        if features is None:
            raise DataError(f"{source.name}: no readable images")
        features.flush()
        dim = features.shape[1]
        del features
        _finish(tmp, out, row, dim)
    except BaseException:  # a bad file, Ctrl-C: no partial features left beside the output
        tmp.unlink(missing_ok=True)
        out.with_name(f".{out.name}.cut.tmp").unlink(missing_ok=True)
        raise
    _write_rows(out, source, indices, labels, model_path)
    return row, dim


def _finish(tmp: Path, out: Path, rows: int, dim: int) -> None:
    """Rename the features into place, cut to the rows written (unreadable files were left out)."""
    arr = np.load(tmp, mmap_mode="r")
    if rows < arr.shape[0]:
        short = np.lib.format.open_memmap(out.with_name(f".{out.name}.cut.tmp"), mode="w+",
                                          dtype=np.float32, shape=(rows, dim))
        short[:] = arr[:rows]
        short.flush()
        del short, arr
        os.replace(out.with_name(f".{out.name}.cut.tmp"), tmp)
    os.replace(tmp, out)


def _write_rows(out: Path, source: StreamedInput, indices: list[int], labels: list[int],
                model_path: str | None) -> None:
    files = [source.as_given(f) for f in source.files()]
    classes = source.classes()
    skipped = [] if source.listing is None else [
        {"path": source.as_given(s.path), "reason": s.reason}
        for s in [*source.listing.skipped, *(source.folder.skipped if source.folder else [])]]
    write_json(rows_path(out), {
        "features": out.name, "model": str(model_path), "rows": len(indices), "streamed": True,
        "files": [files[i] for i in indices], "dataset": source.name if source.shards else None,
        "split": source.split if source.shards else None, "indices": None,
        "labels": labels if classes else None, "classes": classes,
        "resized": resize_record(source.resized(), source.image_size(), "stretch"), "skipped": skipped})


@torch.no_grad()
def streamed_codes(model: Autoencoder, source: StreamedInput, *, batch_size: int = 512, device: str = "cpu",
                   workers: int = 2) -> tuple[torch.Tensor, list[str], torch.Tensor | None]:
    """The codes of ``source`` read batch by batch (N, D), each row's file, and the labels (None
    when unlabelled): a gallery's features, without its images in memory."""
    model.eval().to(device)
    codes, indices, labels = [], [], []
    for raw in source.batches(batch_size, workers):
        codes.append(model.encode(to_float(raw["image"].to(device))).float().cpu())
        indices += raw["index"].tolist()
        labels.append(raw["label"])
    if not codes:
        raise DataError(f"{source.name}: no readable images")
    files = source.files()
    label_tensor = torch.cat(labels).long()
    labelled = bool((label_tensor >= 0).all())
    return torch.cat(codes), [files[i] for i in indices], label_tensor if labelled else None


def stream_fingerprint(source: StreamedInput) -> str:
    """What says a streamed gallery is still the same: the shards' indexes, or the folder's files."""
    from aevision.data.shards import data_fingerprint
    from aevision.tasks.streamed_data import data_key

    return data_fingerprint(source.shards) if source.shards is not None else data_key(None, source.listing)
