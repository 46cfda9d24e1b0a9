"""Images with pixel masks: the in-memory type every segmentation dataset loads into.

Masks are stored as uint8 class ids, one byte per pixel (a 2,000-image set of 128 x 128 masks is
33 MB), with 255 meaning "unknown" (the border class of Oxford pet trimaps, the void label of
PASCAL VOC): losses and metrics skip those pixels. So a set has at most 255 classes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from aevision.data.imageset import ImageSet, Skipped, StackedSet

IGNORE_INDEX = 255


def default_palette(n: int) -> list[tuple[int, int, int]]:
    """PASCAL VOC's colour map: class 0 black, then well-separated colours (bit-interleaved ids)."""
    out = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out.append((r, g, b))
    return out


@dataclass
class SegSet(StackedSet):
    """``images``: (N, C, H, W) uint8; ``masks``: (N, H, W) uint8 class ids (255 = unknown)."""

    images: Tensor
    masks: Tensor
    classes: list[str]
    name: str = ""
    files: list[str] | None = None  # source file of each image (folder data), for output names
    palette: list[tuple[int, int, int]] | None = None  # colour of each class in PNG masks
    skipped: list[Skipped] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"SegSet.images must be a (N, C, H, W) uint8 tensor, got "
                             f"{tuple(self.images.shape)} {self.images.dtype}")
        n, _, h, w = self.images.shape
        if self.masks.dtype != torch.uint8 or tuple(self.masks.shape) != (n, h, w):
            raise ValueError(f"SegSet.masks must be a ({n}, {h}, {w}) uint8 tensor, got "
                             f"{tuple(self.masks.shape)} {self.masks.dtype}")
        if not 1 <= len(self.classes) < IGNORE_INDEX:
            raise ValueError(f"SegSet.classes must name 1..{IGNORE_INDEX - 1} classes, "
                             f"got {len(self.classes)}")
        if self.palette is None:
            self.palette = default_palette(len(self.classes))

    def subset(self, indices: Tensor | list[int] | range) -> SegSet:
        """The images and masks at ``indices``; the files skipped while loading stay listed."""
        idx = torch.as_tensor(list(indices) if isinstance(indices, range) else indices, dtype=torch.long)
        return SegSet(self.images[idx], self.masks[idx], self.classes, self.name,
                      None if self.files is None else [self.files[i] for i in idx.tolist()],
                      self.palette, list(self.skipped))

    def pixel_counts(self) -> Tensor:
        """(K,) number of pixels of each class (unknown pixels not counted)."""
        m = self.masks.flatten()
        return torch.bincount(m[m != IGNORE_INDEX].long(), minlength=self.num_classes)[: self.num_classes]

    def as_imageset(self) -> ImageSet:
        """The images alone (for pretraining an autoencoder on them)."""
        return ImageSet(self.images, None, None, self.name, self.files, list(self.skipped))


@dataclass
class SegSplits:
    """A segmentation dataset's splits; ``unlabelled`` loads its photos that have no mask (none
    of them a test photo), which pretraining adds to the training images and ``segment`` never
    sees (a callable: only pretraining pays for decoding them)."""

    train: SegSet
    test: SegSet | None
    val: SegSet | None = None
    unlabelled: Callable[[], ImageSet] | None = None
