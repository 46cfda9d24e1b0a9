"""Masks a person can open: palette PNGs, overlays on the image, and an example sheet.

A predicted mask is written as a palette ("P" mode) PNG: the pixel value is the class id, so the
file is machine-readable as is (``segfolder`` reads it back), and the palette shows each class in
its colour in any viewer; unknown pixels (255) are white. Overlays tint the image with the class
colours; classes coloured black (the background, in the VOC palette) leave the image untouched.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image
from torch import Tensor

from aevision.data.segset import IGNORE_INDEX
from aevision.io import write_bytes
from aevision.report.plots import save_image


def _flat_palette(palette: Sequence[Sequence[int]]) -> list[int]:
    colours = [tuple(int(v) for v in c[:3]) for c in palette][:IGNORE_INDEX]
    colours += [(0, 0, 0)] * (256 - len(colours))
    colours[IGNORE_INDEX] = (255, 255, 255)
    return [v for c in colours for v in c]


def mask_png(mask: np.ndarray | Tensor, palette: Sequence[Sequence[int]]) -> bytes:
    """(H, W) class ids -> palette PNG bytes."""
    arr = np.asarray(mask.cpu() if isinstance(mask, Tensor) else mask).astype(np.uint8)
    img = Image.fromarray(arr)  # mode L; attaching a palette makes it a P image
    img.putpalette(_flat_palette(palette))
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def save_mask(path: str | os.PathLike[str], mask: np.ndarray | Tensor,
              palette: Sequence[Sequence[int]]) -> None:
    write_bytes(path, mask_png(mask, palette))


def _rgb(image: np.ndarray | Tensor) -> np.ndarray:
    """(C, H, W) uint8 or float in [0, 1] -> (H, W, 3) float32 in [0, 1]."""
    arr = np.asarray(image.detach().cpu() if isinstance(image, Tensor) else image)
    arr = arr.astype(np.float32) / 255.0 if arr.dtype == np.uint8 else arr.astype(np.float32)
    arr = arr.transpose(1, 2, 0)
    return np.repeat(arr, 3, axis=2) if arr.shape[2] == 1 else arr[:, :, :3]


def overlay(image: np.ndarray | Tensor, mask: np.ndarray | Tensor, palette: Sequence[Sequence[int]],
            alpha: float = 0.5) -> np.ndarray:
    """Image tinted by mask colours: (H, W, 3) uint8."""
    rgb = _rgb(image)
    m = np.asarray(mask.cpu() if isinstance(mask, Tensor) else mask).astype(np.int64)
    lut = np.array(_flat_palette(palette), dtype=np.float32).reshape(256, 3) / 255.0
    colour = lut[m]
    tint = (colour.sum(axis=2) > 0) & (m != IGNORE_INDEX)
    out = np.where(tint[:, :, None], (1 - alpha) * rgb + alpha * colour, rgb)
    return (np.clip(out, 0, 1) * 255).round().astype(np.uint8)


def upscale(arr: np.ndarray, min_side: int = 128) -> np.ndarray:
    """Nearest-neighbour enlargement of small images so their pixels can be seen."""
    k = max(1, -(-min_side // min(arr.shape[:2])))
    return arr.repeat(k, axis=0).repeat(k, axis=1) if k > 1 else arr


def save_overlay(path: str | os.PathLike[str], image: np.ndarray | Tensor, mask: np.ndarray | Tensor,
                 palette: Sequence[Sequence[int]]) -> None:
    save_image(path, upscale(overlay(image, mask, palette)))


def example_sheet(path: str | os.PathLike[str], images: Tensor, truths: Tensor | None, preds: Tensor,
                  palette: Sequence[Sequence[int]], pad: int = 2) -> None:
    """One column per image: the image, the true mask over it (when known), the prediction over it."""
    lut = np.array(_flat_palette(palette), dtype=np.uint8).reshape(256, 3)
    columns = []
    for i in range(len(images)):
        cells = [(_rgb(images[i]) * 255).round().astype(np.uint8)]
        if truths is not None:
            cells.append(lut[np.asarray(truths[i].cpu()).astype(np.int64)])
        cells.append(overlay(images[i], preds[i], palette))
        h, w = cells[0].shape[:2]
        col = np.full(((h + pad) * len(cells), w + pad, 3), 255, dtype=np.uint8)
        for r, cell in enumerate(cells):
            col[r * (h + pad):r * (h + pad) + h, :w] = cell
        columns.append(col)
    save_image(path, upscale(np.concatenate(columns, axis=1), min_side=192))
