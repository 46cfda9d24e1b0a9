"""Training-time augmentation on whole batches of tensors: one affine warp, flips, erasing, noise.

Batches come from in-memory tensors (:class:`~aevision.data.batches.TensorBatches`), so
augmentation works on the float batch (N, C, H, W) in [0, 1] as a few tensor ops: every sample
gets its own random rotation, scale and shift, but all of them are applied by one ``affine_grid``
+ ``grid_sample`` call, not a Python loop over images. Draws use torch's global generator, which
the training run seeds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from aevision.validation import check


@dataclass
class AugmentConfig:
    """All off by default. Flips suit natural images and clothing, not digits or text."""

    shift: float = 0.0  # max translation, as a fraction of the image size (0.1 = 10%)
    rotate: float = 0.0  # max rotation in degrees (either way)
    scale: float = 0.0  # max relative zoom in or out (0.1 = 90%..110%)
    hflip: bool = False  # mirror left-right with probability 1/2
    erase: float = 0.0  # probability of blanking one random rectangle (random erasing / cutout)
    erase_size: float = 0.4  # its side, as a fraction of the image side, at most
    noise: float = 0.0  # std of additive Gaussian noise

    def validate(self, prefix: str = "augment") -> None:
        check(0 <= self.shift <= 0.5, f"{prefix}.shift", self.shift, "a fraction in [0, 0.5]")
        check(0 <= self.rotate <= 180, f"{prefix}.rotate", self.rotate, "degrees in [0, 180]")
        check(0 <= self.scale < 1, f"{prefix}.scale", self.scale, "a fraction in [0, 1)")
        check(0 <= self.erase <= 1, f"{prefix}.erase", self.erase, "a probability in [0, 1]")
        check(0 < self.erase_size <= 1, f"{prefix}.erase_size", self.erase_size,
              "a fraction in (0, 1]")
        check(self.noise >= 0, f"{prefix}.noise", self.noise, "a standard deviation >= 0")

    @property
    def active(self) -> bool:
        return bool(self.shift or self.rotate or self.scale or self.hflip or self.erase or self.noise)


class Augment:
    """Callable ``(N, C, H, W) -> (N, C, H, W)``, the ``transform`` of a training TensorBatches."""

    def __init__(self, cfg: AugmentConfig):
        cfg.validate()
        self.cfg = cfg

    def __call__(self, x: Tensor) -> Tensor:
        cfg = self.cfg
        if cfg.shift or cfg.rotate or cfg.scale:
            x = self.warp(x)
        if cfg.hflip:
            flip = torch.rand(len(x), device=x.device) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        if cfg.erase:
            x = self.random_erase(x)
        if cfg.noise:
            x = (x + cfg.noise * torch.randn_like(x)).clamp(0, 1)
        return x

    def images_only(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """The labelled-batch form ``(x, y) -> (x', y)``: class labels do not move with the image."""
        return self(x), y

    def warp(self, x: Tensor) -> Tensor:
        """Per-sample rotation, zoom and shift in one batched resampling (zeros padding)."""
        n, dev = len(x), x.device
        angle = (torch.rand(n, device=dev) * 2 - 1) * math.radians(self.cfg.rotate)
        zoom = 1 + (torch.rand(n, device=dev) * 2 - 1) * self.cfg.scale
        shift = (torch.rand(n, 2, device=dev) * 2 - 1) * (2 * self.cfg.shift)  # grid units: [-1, 1]
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                             torch.stack([sin, cos, shift[:, 1]], 1)], 1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def random_erase(self, x: Tensor) -> Tensor:
        """With probability ``erase``, zero one rectangle per image (sides up to ``erase_size``)."""
        n, _, h, w = x.shape
        dev = x.device
        side_h = (torch.rand(n, device=dev) * self.cfg.erase_size * h).long().clamp(min=1)
        side_w = (torch.rand(n, device=dev) * self.cfg.erase_size * w).long().clamp(min=1)
        top = (torch.rand(n, device=dev) * (h - side_h + 1)).long()
        left = (torch.rand(n, device=dev) * (w - side_w + 1)).long()
        rows = torch.arange(h, device=dev).view(1, h, 1)
        cols = torch.arange(w, device=dev).view(1, 1, w)
        box = ((rows >= top.view(-1, 1, 1)) & (rows < (top + side_h).view(-1, 1, 1))
               & (cols >= left.view(-1, 1, 1)) & (cols < (left + side_w).view(-1, 1, 1)))
        on = (torch.rand(n, device=dev) < self.cfg.erase).view(-1, 1, 1)
        return x.masked_fill((box & on).unsqueeze(1), 0.0)
