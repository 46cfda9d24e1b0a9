"""The dataset registry: ``digits`` (embedded), torchvision sets, generated sets, folders.

A loader takes a :class:`Source` (where data lives and how to read it) plus its own keyword
options, and returns the ``train`` and ``test`` splits. Validation is carved from ``train`` by
:func:`load_dataset`, seeded, so every loader gets it the same way. Test splits are fixed (the
official one, or a split with a fixed seed) so numbers stay comparable across ``--seed`` values.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from aevision.config import DataConfig
from aevision.data.imageset import ImageSet
from aevision.data.splits import limited, permutation, train_val_split
from aevision.data.video import VideoSet
from aevision.errors import DataError
from aevision.io import user_path
from aevision.registry import Registry

DEFAULT_ROOT = "~/.cache/aevision"
TEST_SPLIT_SEED = 20240101  # fixed: the test split of a dataset never depends on --seed


def data_root(root: str | None = None) -> Path:
    """``root``, else ``$AEVISION_DATA``, else ``~/.cache/aevision``."""
    return user_path(root or os.environ.get("AEVISION_DATA") or DEFAULT_ROOT)


@dataclass(frozen=True)
class Source:
    """Where a loader finds its files and how it may get them."""

    root: Path
    download: bool = True
    strict: bool = False
    channels: int | None = None
    image_size: tuple[int, int] | None = None
    argument: str | None = None  # the PATH of ``folder:PATH``


@dataclass
class Splits:
    """A dataset's splits: image sets, or video sets (sequences of ordered frames)."""

    train: ImageSet | VideoSet
    test: ImageSet | VideoSet | None
    val: ImageSet | VideoSet | None = None


Loader = Callable[..., Splits]
DATASETS: Registry[Loader] = Registry("dataset")


def resolve_source(cfg: DataConfig, registry: Registry[Loader]) -> tuple[str, Source]:
    """The registered name in ``cfg.name`` (``folder:PATH`` -> ``folder``) and its :class:`Source`."""
    name, _, argument = cfg.name.partition(":")
    entry = registry.get(name, "data.name")
    if argument and not getattr(entry.fn, "takes_argument", False):
        raise DataError(f"data.name: dataset {name!r} takes no ':' argument (got {cfg.name!r})")
    if getattr(entry.fn, "takes_argument", False) and not argument:
        raise DataError(f"data.name: dataset {name!r} needs a path, e.g. {name}:/path/to/images")
    return name, Source(
        root=data_root(cfg.root),
        download=cfg.download,
        strict=cfg.strict,
        channels=cfg.channels,
        image_size=tuple(cfg.image_size) if cfg.image_size else None,  # type: ignore[arg-type]
        argument=argument or None,
    )


def load_dataset(cfg: DataConfig, seed: int) -> Splits:
    """Load ``cfg.name`` with its options, convert/resize as configured, split off validation."""
    name, source = resolve_source(cfg, DATASETS)
    splits = DATASETS.build(name, source, field="data", options=cfg.options)
    splits.train = conform(splits.train, source)
    if splits.test is not None:
        splits.test = conform(splits.test, source)
    if cfg.limit is not None and cfg.limit < len(splits.train):
        splits.train = splits.train.subset(limited(len(splits.train), cfg.limit, seed))
    if splits.val is None:
        splits.train, splits.val = train_val_split(splits.train, cfg.val_fraction, seed)
    return splits


def conform(data: ImageSet | VideoSet, source: Source) -> ImageSet | VideoSet:
    """Apply the configured channel count and image size to an already-loaded set (frames of
    videos alike: a video's ``images`` are its frames)."""
    images = data.images
    c = images.shape[1]
    if source.channels is not None and source.channels != c:
        if source.channels == 3 and c == 1:
            images = images.expand(-1, 3, -1, -1).contiguous()
        elif source.channels == 1 and c == 3:
            weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            images = (images.float() * weights).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
        else:
            raise DataError(f"{data.name}: cannot convert {c}-channel images to {source.channels}")
    if source.image_size is not None and tuple(images.shape[2:]) != source.image_size:
        resized = []
        for chunk in images.split(4096):
            x = F.interpolate(chunk.float(), size=source.image_size, mode="bilinear",
                              antialias=True, align_corners=False)
            resized.append(x.round().clamp(0, 255).to(torch.uint8))
        images = torch.cat(resized)
    if images is data.images:
        return data
    if isinstance(data, VideoSet):
        return data.with_images(images)
    return ImageSet(images, data.labels, data.classes, data.name, data.files, data.skipped)


def fixed_test_split(data: ImageSet, test_fraction: float) -> Splits:
    """Split a dataset that has no official test set, with a seed that never changes."""
    perm = permutation(len(data), TEST_SPLIT_SEED)
    n_test = round(test_fraction * len(data))
    return Splits(train=data.subset(perm[n_test:].sort().values),
                  test=data.subset(perm[:n_test].sort().values))


def takes_argument(fn: Loader) -> Loader:
    """Mark a loader whose name carries a ':PATH' argument (``folder:PATH``)."""
    fn.takes_argument = True  # type: ignore[attr-defined]
    return fn
