"""The segmentation dataset registry: images with pixel masks, split like every other dataset.

A segmentation loader takes a :class:`Source` plus its own options and returns
:class:`SegSplits`. :func:`register_segmentation` also registers the images alone as a plain
dataset of the same name, so ``aevision pretrain --dataset penn-fudan`` pretrains on exactly the
training images that ``aevision segment --dataset penn-fudan`` later segments, and the test split
stays held out from both. A dataset's photos without masks (``SegSplits.unlabelled``) join the
training images there.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from aevision.config import DataConfig
from aevision.data.imageset import ImageSet
from aevision.data.registry import (
    DATASETS,
    TEST_SPLIT_SEED,
    Source,
    Splits,
    conform,
    resolve_source,
)
from aevision.data.segset import SegSet, SegSplits
from aevision.data.splits import limited, permutation
from aevision.registry import Registry

SegLoader = Callable[..., SegSplits]
SEG_DATASETS: Registry[SegLoader] = Registry("segmentation dataset")


def register_segmentation(name: str, summary: str) -> Callable[[SegLoader], SegLoader]:
    """Register ``fn`` as segmentation dataset ``name``, and its images alone in ``DATASETS``."""

    def deco(fn: SegLoader) -> SegLoader:
        SEG_DATASETS.register(name, summary)(fn)

        @functools.wraps(fn)  # same keyword options, same ':' argument marker
        def images_only(source: Source, **options: object) -> Splits:
            s = fn(source, **options)
            return Splits(train=with_unlabelled(s.train.as_imageset(), s),
                          test=None if s.test is None else s.test.as_imageset(),
                          val=None if s.val is None else s.val.as_imageset())

        DATASETS.register(name, f"{summary} [images only here; with masks in 'aevision segment']")(
            images_only)
        return fn

    return deco


def with_unlabelled(train: ImageSet, splits: SegSplits) -> ImageSet:
    """The training images followed by the dataset's photos without masks (when it has some)."""
    if splits.unlabelled is None:
        return train
    extra = splits.unlabelled()
    if not len(extra):
        return train
    files = None if train.files is None or extra.files is None else [*train.files, *extra.files]
    return ImageSet(torch.cat([train.images, extra.images]), name=train.name, files=files,
                    skipped=[*train.skipped, *extra.skipped])


def load_segmentation(cfg: DataConfig, seed: int) -> SegSplits:
    """Load segmentation dataset ``cfg.name``, convert/resize as configured, split off validation.

    The test split is fixed per dataset; validation (``cfg.val_fraction`` of the training
    images) follows ``seed``.
    """
    name, source = resolve_source(cfg, SEG_DATASETS)
    splits = SEG_DATASETS.build(name, source, field="data", options=cfg.options)
    splits.train = conform_masks(splits.train, source)
    if splits.test is not None:
        splits.test = conform_masks(splits.test, source)
    if splits.val is not None:
        splits.val = conform_masks(splits.val, source)
    if cfg.limit is not None and cfg.limit < len(splits.train):
        splits.train = splits.train.subset(limited(len(splits.train), cfg.limit, seed))
    if splits.val is None:
        splits.train, splits.val = val_split(splits.train, cfg.val_fraction, seed)
    return splits


def conform_masks(data: SegSet, source: Source) -> SegSet:
    """Apply the configured channel count and size: images as usual, masks by nearest neighbour."""
    images = conform(ImageSet(data.images, name=data.name), source).images
    masks = data.masks
    if tuple(images.shape[2:]) != tuple(masks.shape[1:]):
        masks = resize_masks(masks, (int(images.shape[2]), int(images.shape[3])))
    if images is data.images and masks is data.masks:
        return data
    return SegSet(images, masks, data.classes, data.name, data.files, data.palette, data.skipped)


def resize_masks(masks: Tensor, size: tuple[int, int]) -> Tensor:
    """(N, H, W) uint8 class ids -> (N, *size), nearest neighbour (ids are never blended)."""
    out = F.interpolate(masks[:, None].float(), size=size, mode="nearest-exact")
    return out[:, 0].round().to(torch.uint8)


def val_split(data: SegSet, fraction: float, seed: int) -> tuple[SegSet, SegSet | None]:
    if fraction <= 0 or len(data) < 2:
        return data, None
    perm = permutation(len(data), seed, 17)
    n_val = max(1, round(fraction * len(data)))
    return data.subset(perm[n_val:].sort().values), data.subset(perm[:n_val].sort().values)


def fixed_test_split(data: SegSet, n_test: int) -> SegSplits:
    """Hold out ``n_test`` images chosen with a seed that never changes."""
    perm = permutation(len(data), TEST_SPLIT_SEED)
    return SegSplits(train=data.subset(perm[n_test:].sort().values),
                     test=data.subset(perm[:n_test].sort().values) if n_test else None)
