"""``folder:PATH``: a user's image folder, labelled by class subfolders or flat and unlabelled."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from aevision.data import loading
from aevision.data.images import read_image
from aevision.data.imageset import ImageSet, Skipped
from aevision.errors import DataError

log = logging.getLogger(__name__)


def scan_folder(root: Path) -> tuple[list[Path], list[int] | None, list[str] | None, list[Skipped]]:
    """Files to read, their labels and class names.

    A folder with subfolders is labelled by subfolder name (files at the top level are then left
    out and reported); a folder of files alone is unlabelled. Hidden files are ignored.
    """
    if not root.exists():
        raise DataError(f"folder:{root}: no such folder")
    if not root.is_dir():
        raise DataError(f"folder:{root}: not a folder")
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    subdirs = [p for p in entries if p.is_dir()]
    skipped: list[Skipped] = []
    if subdirs:
        classes = [d.name for d in subdirs]
        files: list[Path] = []
        labels: list[int] = []
        for i, d in enumerate(subdirs):
            for p in sorted(d.rglob("*")):
                if p.is_file() and not any(part.startswith(".") for part in p.relative_to(d).parts):
                    files.append(p)
                    labels.append(i)
        skipped += [Skipped(str(p), "file beside class folders") for p in entries if p.is_file()]
        return files, labels, classes, skipped
    return [p for p in entries if p.is_file()], None, None, skipped


def load_path(path: Path, channels: int | None, image_size: Sequence[int] | None) -> ImageSet:
    """An image folder (see :func:`load_folder`) or one image file (``channels`` then required)."""
    if path.is_dir():
        return load_folder(path, channels=channels, image_size=image_size)
    if not path.is_file():
        raise DataError(f"{path}: no such file or folder")
    assert channels is not None
    return ImageSet(read_image(path, channels, image_size).unsqueeze(0), files=[str(path)])


def load_folder(
    root: str | Path,
    *,
    channels: int | None = None,
    image_size: Sequence[int] | None = None,
    strict: bool = False,
) -> ImageSet:
    """Decode every image under ``root`` into memory.

    Unreadable files are skipped with a counted warning (or stop the run when ``strict``); they
    are listed in ``ImageSet.skipped`` so reports can name them.
    """
    root = Path(root)
    files, labels, classes, skipped = scan_folder(root)
    n_seen = len(files) + len(skipped)
    label_of = dict(zip(files, labels or [None] * len(files), strict=True))
    keep = loading.with_image_suffix(files, skipped)
    loading.stop_if_strict(skipped, strict)
    if channels is None:
        channels = loading.guess_channels(keep)
    decoded = loading.decode_or_skip(keep, channels, image_size, skipped, strict)
    if not decoded:
        raise DataError(f"folder:{root}: no readable images found{loading.skipped_example(skipped)}")
    loading.check_one_size(f"folder:{root}", [(str(p), t) for p, t in decoded])
    if skipped:
        log.warning("folder:%s: skipped %d of %d files (%s)", root, len(skipped), n_seen,
                    loading.skip_reasons(skipped))
    label_tensor = None
    if classes is not None:
        label_tensor = torch.tensor([label_of[p] for p, _ in decoded], dtype=torch.long)
        empty = [c for i, c in enumerate(classes) if not (label_tensor == i).any()]
        if empty:
            log.warning("folder:%s: class folders with no readable image: %s", root, ", ".join(empty))
    return ImageSet(
        images=torch.stack([t for _, t in decoded]),
        labels=label_tensor,
        classes=classes,
        name=f"folder:{root}",
        files=[str(p) for p, _ in decoded],
        skipped=skipped,
    )
