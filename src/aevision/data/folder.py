"""``folder:PATH``: a user's image folder, labelled by class subfolders or flat and unlabelled."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch

from aevision.data.images import BadImage, decode_many, is_image_path, peek_is_grey
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
    keep: list[tuple[Path, int | None]] = []
    for i, p in enumerate(files):
        if not is_image_path(p):
            skipped.append(Skipped(str(p), "not an image file (unknown suffix)"))
            continue
        keep.append((p, None if labels is None else labels[i]))
    if strict and skipped:
        raise DataError(f"{skipped[0].path}: {skipped[0].reason} (strict mode)")
    if channels is None:
        greys = [peek_is_grey(p) for p, _ in keep[:64]]
        channels = 1 if greys and all(g is not False for g in greys) else 3
    decoded = decode_many([p for p, _ in keep], channels, image_size)
    images, out_labels, names = [], [], []
    for (p, label), result in zip(keep, decoded, strict=True):
        if isinstance(result, BadImage):
            if strict:
                raise DataError(f"{p}: {result} (strict mode)")
            skipped.append(Skipped(str(p), str(result)))
            continue
        images.append(result)
        out_labels.append(label)
        names.append(str(p))
    if not images:
        raise DataError(
            f"folder:{root}: no readable images found"
            + (f" ({len(skipped)} files skipped, e.g. {skipped[0].path}: {skipped[0].reason})"
               if skipped else "")
        )
    sizes = Counter(tuple(t.shape[1:]) for t in images)
    if len(sizes) > 1:
        (common, _), (other, _) = sizes.most_common(2)
        example = next(n for n, t in zip(names, images, strict=True) if tuple(t.shape[1:]) == other)
        raise DataError(
            f"folder:{root}: images differ in size (most are {common[0]}x{common[1]}, "
            f"{example} is {other[0]}x{other[1]}); set data.image_size=[H,W] to resize them"
        )
    if skipped:
        reasons = Counter(s.reason.split(" (")[0] for s in skipped)
        log.warning(
            "folder:%s: skipped %d of %d files (%s)",
            root, len(skipped), n_seen,
            ", ".join(f"{n} {r}" for r, n in reasons.most_common()),
        )
    label_tensor = None
    if classes is not None:
        label_tensor = torch.tensor(out_labels, dtype=torch.long)
        empty = [c for i, c in enumerate(classes) if not (label_tensor == i).any()]
        if empty:
            log.warning("folder:%s: class folders with no readable image: %s", root, ", ".join(empty))
    return ImageSet(
        images=torch.stack(images),
        labels=label_tensor,
        classes=classes,
        name=f"folder:{root}",
        files=names,
        skipped=skipped,
    )
