"""``folder:PATH``: a user's image folder, labelled by class subfolders or flat and unlabelled.

A folder whose top level is ``train/`` and ``test/`` (and optionally ``val/``, ``valid/`` or
``validation/``), each of class
subfolders or flat, is a dataset with its own splits (CIFAR-10 as JPEG folders, ImageNet-style
layouts): :func:`split_folders` finds them and :func:`load_split_folders` reads them with one class
list, so ``train`` and ``test`` are never taken for two classes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from aevision.data import loading
from aevision.data.images import is_hidden, read_image, visible_tree
from aevision.data.imageset import ImageSet, Skipped
from aevision.errors import DataError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")  # the split folders a dataset folder may hold
VAL_NAMES = ("val", "valid", "validation")  # what its validation folder may be called
BROKEN_LINK = "a link to nothing (its target was moved or deleted)"


def split_folders(root: Path) -> dict[str, Path] | None:
    """``{"train": root/train, ["val": root/val,] "test": root/test}`` when those are exactly the
    visible subfolders of ``root`` (files beside them are allowed; ``valid/`` or ``validation/``
    may stand for ``val/``); None without a ``train/`` beside another of them (class folders). Subfolders that
    look like splits but are not exactly that layout are an error: read as classes, a test/ folder
    would be trained on."""
    if not root.is_dir():
        return None
    dirs = {p.name: p for p in root.iterdir() if p.is_dir() and not is_hidden(p.name)}
    vals = [n for n in VAL_NAMES if n in dirs]
    splits = sorted({"train", "test", *vals} & set(dirs))
    if "train" not in dirs or len(splits) < 2:
        return None
    others = sorted(set(dirs) - set(splits))
    if others or "test" not in dirs or len(vals) > 1:
        found = ", ".join(f"{n}/" for n in splits)
        why = (f"{', '.join(f'{n}/' for n in others)} beside them" if others
               else "no test/ folder (rename the one held out to test/)" if "test" not in dirs
               else f"both {' and '.join(f'{n}/' for n in vals)}")
        raise DataError(f"{root}: its subfolders {found} look like a dataset's splits, but it has {why}: "
                        "a split folder holds train/ and test/ (and optionally val/), nothing else")
    return {"train": dirs["train"], **({"val": dirs[vals[0]]} if vals else {}), "test": dirs["test"]}


def scan_folder(root: Path) -> tuple[list[Path], list[int] | None, list[str] | None, list[Skipped]]:
    """Files to read, their labels and class names.

    A folder with subfolders is labelled by subfolder name (files at the top level are then left
    out and reported); a folder of files alone is unlabelled. Hidden files are ignored.
    """
    if not root.exists():
        raise DataError(f"folder:{root}: no such folder")
    if not root.is_dir():
        raise DataError(f"folder:{root}: not a folder")
    if split_folders(root) is not None:
        raise DataError(f"{root}: holds the splits train/ and test/, not classes: read it as the dataset "
                        f"folder:{root} with its --split (one class list for every split; a split's "
                        f"own folder, e.g. {root / 'test'}, numbers only the classes it holds)")
    entries = sorted(p for p in root.iterdir() if not is_hidden(p.name))
    subdirs = [p for p in entries if p.is_dir()]
    skipped: list[Skipped] = []
    if subdirs:
        classes = [d.name for d in subdirs]
        files: list[Path] = []
        labels: list[int] = []
        for i, d in enumerate(subdirs):
            for p in visible_tree(d):
                if p.is_file():
                    files.append(p)
                    labels.append(i)
                elif p.is_symlink() and not p.exists():
                    skipped.append(Skipped(str(p), BROKEN_LINK))
        skipped += [Skipped(str(p), "file beside class folders") for p in entries if p.is_file()]
        return files, labels, classes, skipped
    skipped += [Skipped(str(p), BROKEN_LINK) for p in entries if p.is_symlink() and not p.exists()]
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


def load_split_folders(folders: dict[str, Path], *, channels: int | None = None,
                       image_size: Sequence[int] | None = None, strict: bool = False
                       ) -> dict[str, ImageSet]:
    """Each split folder of :func:`split_folders` read by :func:`load_folder`, with the channel
    count of ``train`` and its class list: a class folder of ``val`` or ``test`` must be one of
    ``train``'s (a class missing from a split is allowed), and its labels index ``train``'s
    classes. All splits have one image size."""
    train = load_folder(folders["train"], channels=channels, image_size=image_size, strict=strict)
    sets = {"train": train}
    for split in (s for s in SPLITS if s in folders and s != "train"):
        data = load_folder(folders[split], channels=train.image_shape[0], image_size=image_size,
                           strict=strict)
        sets[split] = same_classes(data, train, folders[split], folders["train"])
    loading.check_one_size(f"folder:{folders['train'].parent}",
                           [(str(folders[k]), s.images[0]) for k, s in sets.items()],
                           what="splits", verb="has")
    return sets


def same_classes(data: ImageSet, train: ImageSet, folder: Path, train_folder: Path) -> ImageSet:
    """``data`` labelled by ``train``'s class list (both labelled, or both not)."""
    if (data.classes is None) != (train.classes is None):
        labelled, flat = (folder, train_folder) if data.classes is not None else (train_folder, folder)
        raise DataError(f"{labelled}: has class folders but {flat} has none; give every split "
                        f"the same layout")
    if data.classes is None or train.classes is None or data.classes == train.classes:
        return data
    unknown = [c for c in data.classes if c not in train.classes]
    if unknown:
        raise DataError(f"{folder / unknown[0]}: class folder {unknown[0]!r} is not one of "
                        f"{train_folder}'s classes ({', '.join(train.classes)})")
    index = torch.tensor([train.classes.index(c) for c in data.classes])
    assert data.labels is not None
    return ImageSet(data.images, index[data.labels], list(train.classes), data.name, data.files,
                    data.skipped)
