"""Batch augmentation that moves images and masks together (a ``TensorBatches`` transform).

Geometry is applied to both (flips, quarter turns, zoomed crops: bilinear for images, nearest for
masks, so class ids are never blended); photometric jitter to images only. Randomness comes from
torch's global generator, which checkpoints save, so a resumed run augments as the original did.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from aevision.data.augment import jitter, zoom_grid
from aevision.tasks.segmentation.config import AugmentConfig


class SegAugment:
    """``(x, masks) -> (x, masks)``: x (N, C, H, W) float in [0, 1], masks (N, H, W) uint8."""

    def __init__(self, cfg: AugmentConfig):
        self.cfg = cfg

    @property
    def active(self) -> bool:
        c = self.cfg
        return c.hflip or c.vflip or c.rot90 or c.zoom > 1.0 or c.jitter > 0

    def __call__(self, x: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
        c, n, dev = self.cfg, x.shape[0], x.device
        x, masks = x.clone(), masks.clone()
        if c.hflip:
            f = torch.rand(n, device=dev) < 0.5
            x[f], masks[f] = x[f].flip(-1), masks[f].flip(-1)
        if c.vflip:
            f = torch.rand(n, device=dev) < 0.5
            x[f], masks[f] = x[f].flip(-2), masks[f].flip(-2)
        if c.rot90 and x.shape[-1] == x.shape[-2]:
            k = torch.randint(0, 4, (n,), device=dev)
            for q in (1, 2, 3):
                f = k == q
                if f.any():
                    x[f] = torch.rot90(x[f], q, dims=(-2, -1))
                    masks[f] = torch.rot90(masks[f], q, dims=(-2, -1))
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
