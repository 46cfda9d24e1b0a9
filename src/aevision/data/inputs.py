"""The images a command runs a trained model on, as the user named them: image files and folders,
or a split of a registered dataset, at the size the model takes.

Nothing is changed silently. An image of another size is an error naming it unless a fit is given
(``stretch``, ``crop`` or ``pad``, see :data:`~aevision.data.images.FITS`), and then
:attr:`Inputs.resized` counts the sizes it was resized from. A folder of class subfolders keeps
its labels. ``limit`` keeps the first files, before anything is decoded, or a seeded draw of a
dataset's images (a class-ordered split's first images are one class). Every row keeps
what it is: its file, or its index in the dataset's ``all`` split (its training images, then its
test images); :meth:`Inputs.record` says so beside features.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from aevision.data import loading
from aevision.data.folder import scan_folder, split_folders
from aevision.data.images import BadImage, Fit, decode_sized
from aevision.data.imageset import ImageSet, Skipped
from aevision.data.splits import Carve
from aevision.data.video import VideoSet
from aevision.errors import ConfigError, DataError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test", "all")
CHUNK = 1024  # files decoded at a time: a refused size stops the reading within one chunk
HOW = {"stretch": "stretched: the aspect ratio changed", "crop": "scaled and centre-cropped",
       "pad": "scaled and padded with black borders"}


def resize_note(resized: Counter[tuple[int, int]], total: int, size: tuple[int, int],
                fit: Fit | None) -> str | None:
    """``resized 3 of 4 images to 8x8 (stretched: ...) from 20x16 (3)``, or None when nothing was."""
    if not resized or fit is None:
        return None
    sizes = ", ".join(f"{h}x{w} ({n})" for (h, w), n in resized.most_common(3))
    more = f" and {len(resized) - 3} other sizes" if len(resized) > 3 else ""
    return (f"resized {sum(resized.values())} of {total} image{'s' if total != 1 else ''} to "
            f"{size[0]}x{size[1]} ({HOW[fit]}) from {sizes}{more}")


def resize_record(resized: Counter[tuple[int, int]], size: tuple[int, int],
                  fit: Fit | None) -> dict[str, Any] | None:
    """What a rows file says was resized (None: nothing)."""
    if not resized:
        return None
    return {"to": list(size), "fit": fit, "from": {f"{h}x{w}": n for (h, w), n in resized.most_common()}}


@dataclass
class Inputs:
    """``data`` and where its rows came from: ``data.files`` for files, or ``dataset`` / ``split``
    / ``indices`` (each row's index in the dataset's ``all`` split)."""

    data: ImageSet
    size: tuple[int, int]
    fit: Fit | None = None
    resized: Counter[tuple[int, int]] = field(default_factory=Counter)  # (H, W) resized from -> count
    dataset: str | None = None
    split: str | None = None
    indices: Tensor | None = None
    notes: list[str] = field(default_factory=list)  # what the user is told besides (one line each)

    def resize_note(self) -> str | None:
        """``resized 3 of 4 images to 8x8 (stretched: ...) from 20x16 (3)``, or None."""
        return resize_note(self.resized, len(self.data), self.size, self.fit)

    def record(self) -> dict[str, Any]:
        """Which image each row is, as JSON: written beside an .npy, into a .safetensors."""
        d = self.data
        return {
            "rows": len(d), "files": d.files, "dataset": self.dataset, "split": self.split,
            "indices": None if self.indices is None else self.indices.tolist(),
            "labels": None if d.labels is None else d.labels.tolist(), "classes": d.classes,
            "resized": resize_record(self.resized, self.size, self.fit),
            "skipped": [{"path": s.path, "reason": s.reason} for s in d.skipped],
        }


def file_inputs(items: Sequence[str | Path], channels: int, size: tuple[int, int], *,
                fit: Fit | None = None, limit: int | None = None) -> Inputs:
    """The first ``limit`` readable images of ``items`` (files, and folders in sorted order),
    labelled when every folder is one of class subfolders. A file named by itself that is not an
    image is an error; one inside a folder is skipped and listed."""
    entries, classes, skipped, notes = listed_files(items)
    seen = len(entries) + len(skipped)
    decoded, resized = decode_first(entries, channels, size, fit, limit, skipped)
    if not decoded:
        raise DataError(f"{', '.join(str(i) for i in items)}: no readable images found"
                        f"{loading.skipped_example(skipped)}")
    if skipped:
        log.warning("skipped %d of %d files (%s)", len(skipped), seen, loading.skip_reasons(skipped))
    labels = None
    if classes is not None:
        labels = torch.tensor([classes.index(entries[i][2]) for i, _ in decoded], dtype=torch.long)
    data = ImageSet(torch.stack([t for _, t in decoded]), labels, classes,
                    name=str(items[0]) if len(items) == 1 else "", skipped=skipped,
                    files=[str(entries[i][0]) for i, _ in decoded])
    return Inputs(data, size, fit, resized, notes=notes)


def split_of_a_dataset(folder: Path) -> list[str]:
    """A note when ``folder`` is one split of a dataset folder (train/ + test/): its labels number
    the classes it holds, which need not be another split's numbering."""
    try:
        splits = split_folders(folder.parent)
    except (DataError, OSError):  # the parent is no split layout, or cannot be listed
        return []
    split = next((k for k, v in (splits or {}).items() if v == folder), None)
    if split is None:
        return []
    return [f"{folder} is the {split} split of {folder.parent}: its labels number the classes it holds; "
            f"--dataset folder:{folder.parent} --split {split} numbers them as the whole dataset does"]


def listed_files(items: Sequence[str | Path]
                 ) -> tuple[list[tuple[Path, bool, str | None]], list[str] | None, list[Skipped], list[str]]:
    """(file, named by itself, class name) in order, the classes (when every item is a folder of
    class subfolders), the files left out, and a note when some labels could not be kept."""
    entries: list[tuple[Path, bool, str | None]] = []
    skipped: list[Skipped] = []
    class_lists, unlabelled, notes = [], [], []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found, labels, classes, left_out = scan_folder(path)
            skipped += left_out
            class_of = dict(zip(found, [classes[i] for i in labels] if classes and labels else
                                [None] * len(found), strict=True))
            entries += [(p, False, class_of[p]) for p in loading.with_image_suffix(found, skipped)]
            if classes is None:
                unlabelled.append(path)
            else:
                class_lists.append(classes)
                notes += split_of_a_dataset(path)
        elif path.is_file():
            entries.append((path, True, None))
            unlabelled.append(path)
        else:
            raise DataError(f"{path}: no such file or folder")
    if class_lists and unlabelled:
        notes.append(f"labels not kept: {unlabelled[0]} is not a folder of class subfolders")
    classes = sorted(set().union(*class_lists)) if class_lists and not unlabelled else None
    return entries, classes, skipped, notes


def decode_first(entries: Sequence[tuple[Path, bool, str | None]], channels: int, size: tuple[int, int],
                 fit: Fit | None, limit: int | None, skipped: list[Skipped]
                 ) -> tuple[list[tuple[int, Tensor]], Counter[tuple[int, int]]]:
    """(entry index, image) of the first ``limit`` entries that decode (all when None), reading no
    file past them (nor past a chunk with one of a size ``fit=None`` refuses); and how many were
    resized from each size."""
    out: list[tuple[int, Tensor]] = []
    resized: Counter[tuple[int, int]] = Counter()
    start = 0
    while start < len(entries) and (limit is None or len(out) < limit):
        stop = min(len(entries), start + CHUNK)
        if limit is not None:
            stop = min(stop, start + limit - len(out))
        chunk = entries[start:stop]
        for i, result in enumerate(decode_sized([p for p, _, _ in chunk], channels, size, fit), start):
            path, named, _ = entries[i]
            if isinstance(result, BadImage):
                if named:
                    raise DataError(f"{path}: {result}")
                skipped.append(Skipped(str(path), str(result)))
                continue
            image, native = result
            if native != tuple(size):
                resized[native] += 1
            out.append((i, image))
        start = stop
    return out, resized


def dataset_inputs(name: str, split: str, channels: int, size: tuple[int, int], *,
                   root: str | None = None, seed: int = 0, limit: int | None = None,
                   carve: Carve | None = None) -> Inputs:
    """Split ``split`` of dataset ``name`` (videos: their frames, in order): ``train`` and ``val``
    as ``pretrain`` took them from the training images with ``carve`` (a model's: see
    :func:`~aevision.models.io.pretraining_carve`; default: pretrain's fraction and ``seed``),
    ``test``, or ``all`` (the training images, then the test
    images). ``limit`` keeps that many images drawn with ``seed`` (in their split's order; a
    video's first frames instead)."""
    from aevision.config import DataConfig
    from aevision.data.registry import load_dataset
    from aevision.data.splits import limited

    if split not in SPLITS:
        raise ConfigError("--split", split, f"one of {', '.join(SPLITS)}")
    splits = load_dataset(DataConfig(name=name, root=root, channels=channels, image_size=list(size),
                                     val_fraction=0.0, options=dict((carve and carve.options) or {})), seed)
    parts = {k: s for k, s in (("train", splits.train), ("val", splits.val), ("test", splits.test))
             if s is not None}
    bounds, everything = _concat(parts)
    rows = {k: torch.arange(a, b) for k, (a, b) in bounds.items()}
    rows["all"] = torch.arange(len(everything))
    train, carve = parts["train"], carve or Carve(DataConfig.val_fraction, seed)
    if "val" in parts:  # the dataset's own: only pretraining's limit applies
        rows["train"] = _frame_rows(train, limited(len(train), carve.limit, carve.seed))
    else:  # carved from the training images, as pretrain does
        kept, held = carve.rows(len(train), train.labels)
        rows["train"] = _frame_rows(train, kept)
        if held is not None:
            rows["val"] = _frame_rows(train, held)
    if split not in rows:
        raise ConfigError("--split", split, f"one of {', '.join(k for k in SPLITS if k in rows)} "
                                            f"(dataset {name!r} has no {split} split)")
    idx = rows[split]
    # a video's frames stay whole sequences, in order; images are drawn (class-ordered sets)
    idx = idx[:limit] if any(isinstance(p, VideoSet) for p in parts.values()) else \
        idx[limited(len(idx), limit, seed)]
    return Inputs(everything.subset(idx), size, dataset=name, split=split, indices=idx)


def _frame_rows(data: ImageSet | VideoSet, idx: Tensor) -> Tensor:
    """Rows of ``data``'s images for items ``idx`` (a video's sequence: each of its frames)."""
    if not isinstance(data, VideoSet):
        return idx
    t = data.sequence_length
    return (idx[:, None] * t + torch.arange(t)).flatten()


def _concat(parts: dict[str, ImageSet | VideoSet]) -> tuple[dict[str, tuple[int, int]], ImageSet]:
    """The images of ``parts`` (train, [val,] [test]) one after another, and where each one's
    rows start and end."""
    sets = [p.frame_set() if isinstance(p, VideoSet) else p for p in parts.values()]
    bounds, at = {}, 0
    for name, s in zip(parts, sets, strict=True):
        bounds[name] = (at, at + len(s))
        at += len(s)
    first = sets[0]
    data = ImageSet(
        torch.cat([s.images for s in sets]),
        None if any(s.labels is None for s in sets) else torch.cat([s.labels for s in sets]),
        first.classes, first.name,
        None if any(s.files is None for s in sets) else [f for s in sets for f in s.files],
        list(first.skipped))
    return bounds, data
