"""Batch augmentation that moves images and masks together (a ``TensorBatches`` transform).

Geometry is applied to both (flips, quarter turns, zoomed crops: bilinear for images, nearest for
masks, so class ids are never blended); photometric jitter to images only. Randomness comes from
torch's global generator, which checkpoints save, so a resumed run augments as the original did.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from aevision.config import AugmentConfig
from aevision.data.augment import jitter, quarter_turns, random_flips, zoom_grid

# the changes SegAugment makes (to images and masks alike); the others would need masks resampled
# with unknown borders, or would blank or blur images their masks still describe
SEG_AUGMENTS = ("hflip", "vflip", "rot90", "zoom", "jitter")


class SegAugment:
    """``(x, masks) -> (x, masks)``: x (N, C, H, W) float in [0, 1], masks (N, H, W) uint8."""

    def __init__(self, cfg: AugmentConfig):
        self.cfg = cfg

    @property
    def active(self) -> bool:
        return self.cfg.active

    def __call__(self, x: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
        c = self.cfg
        if c.hflip:
            x, masks = random_flips([x, masks], -1)
        if c.vflip:
            x, masks = random_flips([x, masks], -2)
        if c.rot90:
            x, masks = quarter_turns([x, masks])
        if c.zoom > 1.0:
            x, masks = self._zoom(x, masks)
        if c.jitter > 0:
            x = jitter(x, c.jitter)
        return x, masks

    def _zoom(self, x: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
        """Crop a random window of side fraction s in [1/zoom, 1] and stretch it to full size."""
        grid = zoom_grid(x.shape, self.cfg.zoom, x.device)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        m = F.grid_sample(masks[:, None].float(), grid, mode="nearest", padding_mode="border",
                          align_corners=False)
        return x, m[:, 0].round().to(masks.dtype)
