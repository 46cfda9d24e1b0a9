"""Keypoints drawn over video frames: one colour per keypoint, a short fading trail behind each.

Frames are enlarged (nearest neighbour) so that small videos stay readable. A strip puts a few
frames side by side in a PNG; a GIF plays the whole sequence. Both are written atomically.
"""

from __future__ import annotations

import colorsys
import io
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw
from torch import Tensor

from aevision.data.imageset import as_float
from aevision.io import write_bytes


def palette(k: int) -> list[tuple[int, int, int]]:
    """``k`` well-separated saturated colours (hues spread round the wheel, two brightnesses)."""
    out = []
    for i in range(k):
        h = (i * 0.618033988749895) % 1.0  # golden-ratio steps: neighbours in index differ most
        v = 1.0 if i % 2 == 0 else 0.8
        r, g, b = colorsys.hsv_to_rgb(h, 0.9, v)
        out.append((round(r * 255), round(g * 255), round(b * 255)))
    return out


def _to_rgb(frame: Tensor) -> np.ndarray:
    """(C, H, W) uint8 or float in [0, 1] -> (H, W, 3) uint8."""
    arr = as_float(frame.detach().cpu())
    a = (arr.clamp(0, 1).numpy().transpose(1, 2, 0) * 255).round().astype(np.uint8)
    return np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a[:, :, :3]


def to_pixels(points: Tensor, height: int, width: int, scale: int) -> np.ndarray:
    """[-1, 1] keypoints (..., 2) -> (x, y) in the enlarged image's pixel units."""
    p = points.detach().cpu().double().numpy()
    x = (p[..., 0] + 1) / 2 * (width - 1)
    y = (p[..., 1] + 1) / 2 * (height - 1)
    return np.stack(((x + 0.5) * scale, (y + 0.5) * scale), axis=-1)


def draw_keypoints(frames: Tensor, points: Tensor, *, trail: int = 6, scale: int = 4,
                   truth: Tensor | None = None) -> list[Image.Image]:
    """One image per frame: ``frames`` (T, C, H, W), ``points`` (T, K, 2) in [-1, 1].

    ``truth``: optional (T, J, 2) true positions in [-1, 1], drawn as small white crosses.
    """
    t_len, _, h, w = frames.shape
    pts = to_pixels(points, h, w, scale)
    gt = to_pixels(truth, h, w, scale) if truth is not None else None
    colours = palette(points.shape[1])
    r = max(2.0, scale * 0.9)
    out = []
    for t in range(t_len):
        img = Image.fromarray(_to_rgb(frames[t])).resize((w * scale, h * scale), Image.Resampling.NEAREST)
        draw = ImageDraw.Draw(img)
        if gt is not None:
            for x, y in gt[t]:
                if np.isfinite(x) and np.isfinite(y):
                    draw.line([(x - r, y), (x + r, y)], fill=(255, 255, 255), width=1)
                    draw.line([(x, y - r), (x, y + r)], fill=(255, 255, 255), width=1)
        start = max(0, t - trail)
        for k, colour in enumerate(colours):
            for s in range(start, t):  # older segments fainter: blend towards the frame
                fade = (s - start + 1) / (t - start + 1)
                c = tuple(round(v * fade + 40 * (1 - fade)) for v in colour)
                draw.line([tuple(pts[s, k]), tuple(pts[s + 1, k])], fill=c, width=max(1, scale // 2))
            x, y = pts[t, k]
            draw.ellipse([x - r, y - r, x + r, y + r], fill=colour, outline=(0, 0, 0))
        out.append(img)
    return out


def save_strip(path: str | os.PathLike[str], images: Sequence[Image.Image], frames: int = 8,
               pad: int = 2) -> None:
    """Up to ``frames`` images, evenly spaced over the sequence, side by side in one PNG."""
    n = len(images)
    idx = sorted({round(i * (n - 1) / max(1, frames - 1)) for i in range(min(frames, n))})
    w, h = images[0].size
    strip = Image.new("RGB", (len(idx) * (w + pad) + pad, h + 2 * pad), (255, 255, 255))
    for j, i in enumerate(idx):
        strip.paste(images[i], (pad + j * (w + pad), pad))
    buf = io.BytesIO()
    strip.save(buf, format="PNG")
    write_bytes(path, buf.getvalue())


def save_gif(path: str | os.PathLike[str], images: Sequence[Image.Image], fps: float = 8.0) -> None:
    """An endlessly looping animated GIF of ``images``."""
    frames = [im.convert("P", palette=Image.Palette.ADAPTIVE, colors=255) for im in images]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:],
                   duration=round(1000 / fps), loop=0, disposal=1)
    write_bytes(path, buf.getvalue())
