"""Procedural shapes: seeded, anti-aliased shapes over textured backgrounds, no download.

The rasterizer here is shared by every generated dataset (classification ``shapes``, and the
segmentation and video sets built on it), so they all draw the same shapes the same way.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

KINDS = ("circle", "square", "triangle", "ring", "cross")


def shape_mask(
    kind: str, cx: float, cy: float, r: float, angle: float, height: int, width: int,
    supersample: int = 1,
) -> np.ndarray:
    """Coverage in [0, 1] of a shape centred at pixel (cx, cy) with radius ``r``: (H, W) float32.

    ``supersample`` > 1 averages s x s sub-pixel samples (anti-aliased edges for images); 1 gives
    a hard 0/1 mask sampled at pixel centres (for segmentation labels).
    """
    s = supersample
    offs = (np.arange(s) + 0.5) / s - 0.5
    ys = (np.arange(height)[:, None] + offs[None, :]).reshape(-1)
    xs = (np.arange(width)[:, None] + offs[None, :]).reshape(-1)
    x = xs[None, :] - cx
    y = ys[:, None] - cy
    cos, sin = np.cos(angle), np.sin(angle)
    u = cos * x + sin * y
    v = -sin * x + cos * y
    if kind == "circle":
        inside = u * u + v * v <= r * r
    elif kind == "ring":
        d2 = u * u + v * v
        inside = (d2 <= r * r) & (d2 >= (0.55 * r) ** 2)
    elif kind == "square":
        h = 0.8 * r
        inside = (np.abs(u) <= h) & (np.abs(v) <= h)
    elif kind == "cross":
        a, b = r, 0.32 * r
        inside = ((np.abs(u) <= a) & (np.abs(v) <= b)) | ((np.abs(v) <= a) & (np.abs(u) <= b))
    elif kind == "triangle":
        inside = np.ones_like(u, dtype=bool)
        for k in range(3):  # three half-planes of an equilateral triangle with circumradius r
            t = np.pi / 2 + k * 2 * np.pi / 3 + np.pi / 3
            inside &= u * np.cos(t) + v * np.sin(t) <= 0.5 * r
    else:
        raise ValueError(f"unknown shape kind {kind!r}; known: {', '.join(KINDS)}")
    cov = inside.astype(np.float32)
    if s > 1:
        cov = cov.reshape(height, s, width, s).mean(axis=(1, 3))
    return cov


def textured_background(
    rng: np.random.Generator, n: int, height: int, width: int, channels: int = 3,
    grain: float = 0.04,
) -> np.ndarray:
    """Smooth coloured blotches plus pixel grain: (n, C, H, W) float32 in [0, 1]."""
    coarse = torch.from_numpy(rng.uniform(0.0, 1.0, (n, channels, 4, 4)).astype(np.float32))
    smooth = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)
    base = rng.uniform(0.15, 0.55, (n, 1, 1, 1)).astype(np.float32)
    contrast = rng.uniform(0.1, 0.35, (n, 1, 1, 1)).astype(np.float32)
    bg = base + contrast * (smooth.numpy() - 0.5)
    bg += rng.normal(0.0, grain, bg.shape).astype(np.float32)
    return np.clip(bg, 0.0, 1.0)


def random_colour(rng: np.random.Generator, channels: int = 3) -> np.ndarray:
    """A saturated colour that stands out from the mid-grey backgrounds."""
    c = rng.uniform(0.0, 1.0, channels).astype(np.float32)
    c[rng.integers(channels)] = rng.uniform(0.85, 1.0)
    return c


def paint(image: np.ndarray, coverage: np.ndarray, colour: np.ndarray) -> None:
    """Alpha-blend ``colour`` into ``image`` (C, H, W) in place, weighted by ``coverage``."""
    image *= 1.0 - coverage[None]
    image += coverage[None] * colour[:, None, None]


def shapes_classification(
    n: int, size: int, seed: int, kinds: tuple[str, ...] = KINDS
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images of one shape each, labelled by kind: ((n, 3, size, size) uint8, (n,) int64)."""
    rng = np.random.default_rng(seed)
    images = textured_background(rng, n, size, size)
    labels = rng.integers(len(kinds), size=n)
    for i in range(n):
        r = rng.uniform(0.18, 0.32) * size
        cx, cy = rng.uniform(r, size - r, 2)
        cov = shape_mask(kinds[labels[i]], cx, cy, r, rng.uniform(0, 2 * np.pi), size, size, 3)
        paint(images[i], cov, random_colour(rng))
    out = torch.from_numpy(np.round(images * 255.0).astype(np.uint8))
    return out, torch.from_numpy(labels.astype(np.int64))
