"""In-memory image collections: the one data type every task consumes.

Datasets that fit in memory (all the built-in ones, most user folders) are decoded once into a
``uint8`` tensor, four times smaller than float32, and converted to ``[0, 1]`` floats one batch at
a time. Nothing is decoded per sample per epoch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class Skipped:
    """A file that was left out, and why (listed in run reports)."""

    path: str
    reason: str


class StackedSet:
    """What an in-memory set (images, videos, images with masks) answers from its stacked uint8
    tensor (N, ..., C, H, W), named by ``STACK``, and its ``classes`` / ``labels``."""

    STACK = "images"
    classes: list[str] | None
    labels: Tensor | None = None

    def __len__(self) -> int:
        """Number of items (images, or sequences of a video set)."""
        return int(getattr(self, self.STACK).shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of every image (every frame)."""
        c, h, w = getattr(self, self.STACK).shape[-3:]
        return int(c), int(h), int(w)

    @property
    def num_classes(self) -> int:
        if self.classes is not None:
            return len(self.classes)
        return int(self.labels.max()) + 1 if self.labels is not None and len(self.labels) else 0


@dataclass
class ImageSet(StackedSet):
    """``images``: (N, C, H, W) uint8; ``labels``: (N,) int64 or None for unlabelled data."""

    images: Tensor
    labels: Tensor | None = None
    classes: list[str] | None = None
    name: str = ""
    files: list[str] | None = None  # source file of each image, for folder data
    skipped: list[Skipped] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(
                f"ImageSet.images must be a (N, C, H, W) uint8 tensor, got "
                f"{tuple(self.images.shape)} {self.images.dtype}"
            )
        if self.labels is not None and self.labels.shape != (len(self.images),):
            raise ValueError(
                f"ImageSet.labels must have shape ({len(self.images)},), "
                f"got {tuple(self.labels.shape)}"
            )

    def subset(self, indices: Tensor | list[int]) -> ImageSet:
        """The images at ``indices``; the files skipped while loading the set stay listed (a
        split's report names them)."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        return ImageSet(
            images=self.images[idx],
            labels=None if self.labels is None else self.labels[idx],
            classes=self.classes,
            name=self.name,
            files=None if self.files is None else [self.files[i] for i in idx.tolist()],
            skipped=list(self.skipped),
        )

    def floats(self, indices: Tensor | slice | None = None) -> Tensor:
        """Images (or a subset) as float32 in [0, 1]."""
        imgs = self.images if indices is None else self.images[indices]
        return to_float(imgs)


def to_float(images: Tensor) -> Tensor:
    """uint8 [0, 255] -> float32 [0, 1]."""
    return images.to(torch.float32).div_(255.0)


def as_float(images: Tensor) -> Tensor:
    """uint8 [0, 255] or float [0, 1] images -> float32 [0, 1] (floats are taken as they are)."""
    return to_float(images) if images.dtype == torch.uint8 else images.float()


def float_batches(images: Tensor, batch_size: int,
                  device: torch.device | str | None = None) -> Iterator[Tensor]:
    """Consecutive batches of uint8 [0, 255] or float [0, 1] images as float32 [0, 1] on ``device``
    (inference over a whole set without holding all of it as floats)."""
    for chunk in images.split(batch_size):
        x = as_float(chunk)
        yield x if device is None else x.to(device)


def to_uint8(images: Tensor) -> Tensor:
    """float [0, 1] -> uint8 [0, 255], rounding and clipping."""
    return images.detach().clamp(0, 1).mul(255.0).round_().to(torch.uint8)
