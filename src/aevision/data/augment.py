"""Training-time augmentation on whole batches of tensors: whole-pixel translation, one affine warp,
zoomed crops, flips, quarter turns, photometric jitter, erasing, noise.

Batches come from in-memory tensors (:class:`~aevision.data.batches.TensorBatches`), so
augmentation works on the float batch (N, C, H, W) in [0, 1] as a few tensor ops: every sample
gets its own random rotation, scale and shift, but all of them are applied by one ``affine_grid``
+ ``grid_sample`` call, not a Python loop over images. Draws use torch's global generator, which
the training run seeds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from aevision.config import AugmentConfig
from aevision.errors import AevisionError


class Augment:
    """Callable ``(N, C, H, W) -> (N, C, H, W)``, the ``transform`` of a training TensorBatches."""

    def __init__(self, cfg: AugmentConfig):
        cfg.validate()
        self.cfg = cfg

    def __call__(self, x: Tensor) -> Tensor:
        cfg = self.cfg
        if cfg.translate:
            x = translate(x, cfg.translate)
        if cfg.shift or cfg.rotate or cfg.scale:
            x = self.warp(x)
        if cfg.zoom > 1.0:
            grid = zoom_grid(x.shape, cfg.zoom, x.device)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        if cfg.hflip:
            (x,) = random_flips([x], -1)
        if cfg.vflip:
            (x,) = random_flips([x], -2)
        if cfg.rot90:
            (x,) = quarter_turns([x])
        if cfg.jitter:
            x = jitter(x, cfg.jitter)
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


def translate(x: Tensor, pixels: int) -> Tensor:
    """Each sample moved by its own whole-pixel offset (dy, dx), each in [-pixels, pixels], the
    border mirrored into the gap (reflect padding; the crop of a padded image, as in the usual CIFAR
    recipe). (N, C, H, W) -> (N, C, H, W): values are copied, never interpolated."""
    n, _, h, w = x.shape
    if pixels >= min(h, w):
        raise AevisionError(f"augment.translate: {pixels} pixels; expected fewer than the image's "
                            f"side ({h} x {w}): the mirrored border cannot fill a wider gap")
    padded = F.pad(x, (pixels,) * 4, mode="reflect")
    offset = torch.randint(0, 2 * pixels + 1, (n, 2), device=x.device)  # the crop's corner in padded
    rows = (offset[:, :1] + torch.arange(h, device=x.device)).view(n, 1, h, 1)
    cols = (offset[:, 1:] + torch.arange(w, device=x.device)).view(n, 1, 1, w)
    batch = torch.arange(n, device=x.device).view(n, 1, 1, 1)
    channel = torch.arange(x.shape[1], device=x.device).view(1, -1, 1, 1)
    return padded[batch, channel, rows, cols]


def zoom_grid(shape: torch.Size | tuple[int, ...], zoom: float, device: torch.device | str | None = None
              ) -> Tensor:
    """Sampling grid of a random window per sample, of side fraction s in [1/zoom, 1], placed anywhere
    inside the image: stretched to full size it is a zoomed crop (no padding, aspect kept). Shared by
    image and image+mask augmentation, so both zoom the same way."""
    n = shape[0]
    s = 1.0 / zoom + torch.rand(n, device=device) * (1.0 - 1.0 / zoom)
    tx = (torch.rand(n, device=device) * 2 - 1) * (1 - s)
    ty = (torch.rand(n, device=device) * 2 - 1) * (1 - s)
    theta = torch.zeros(n, 2, 3, device=device)
    theta[:, 0, 0], theta[:, 1, 1], theta[:, 0, 2], theta[:, 1, 2] = s, s, tx, ty
    return F.affine_grid(theta, list(shape), align_corners=False)


def random_flips(tensors: Sequence[Tensor], dim: int) -> list[Tensor]:
    """Each sample mirrored along ``dim`` with probability 1/2, the same samples in every tensor
    (images and their masks)."""
    first = tensors[0]
    flip = torch.rand(first.shape[0], device=first.device) < 0.5
    return [torch.where(flip.view(-1, *(1,) * (t.dim() - 1)), t.flip(dim), t) for t in tensors]


def quarter_turns(tensors: Sequence[Tensor]) -> list[Tensor]:
    """Each sample turned by a random multiple of 90 degrees, the same turn in every tensor (images
    and their masks); non-square images are left as they are."""
    first = tensors[0]
    if first.shape[-1] != first.shape[-2]:
        return list(tensors)
    k = torch.randint(0, 4, (first.shape[0],), device=first.device)
    out = [t.clone() for t in tensors]
    for q in (1, 2, 3):
        turn = k == q
        if turn.any():
            for o, t in zip(out, tensors, strict=True):
                o[turn] = torch.rot90(t[turn], q, dims=(-2, -1))
    return out


def jitter(x: Tensor, amount: float) -> Tensor:
    """Per-image brightness shift in [-amount, amount] and contrast factor in [1 - amount, 1 + amount]
    about the image's mean, clamped to [0, 1]: the same scene under another exposure, so that a model
    learns what is in a photo rather than how bright it was taken."""
    n, dev = x.shape[0], x.device
    bright = (torch.rand(n, 1, 1, 1, device=dev) * 2 - 1) * amount
    contrast = 1 + (torch.rand(n, 1, 1, 1, device=dev) * 2 - 1) * amount
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * contrast + mean + bright).clamp_(0, 1)
