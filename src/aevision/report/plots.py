"""Figures a person looks at: reconstruction grids and loss curves, written atomically as PNG."""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image
from torch import Tensor

from aevision.io import write_bytes


def _figure_to_png(fig: Any, path: str | os.PathLike[str]) -> None:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    write_bytes(path, buf.getvalue())


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def image_grid(rows: Sequence[Tensor], pad: int = 1, scale: int = 1) -> np.ndarray:
    """Rows of (N, C, H, W) float images in [0, 1] -> one (H', W', 3) uint8 mosaic."""
    cols = max(len(r) for r in rows)
    h, w = rows[0].shape[2:]
    canvas = np.ones(((h + pad) * len(rows) + pad, (w + pad) * cols + pad, 3), dtype=np.float32)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            arr = img.detach().float().clamp(0, 1).cpu().numpy().transpose(1, 2, 0)
            if arr.shape[2] == 1:
                arr = np.repeat(arr, 3, axis=2)
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            canvas[y:y + h, x:x + w] = arr[:, :, :3]
    out = (canvas * 255).round().astype(np.uint8)
    if scale > 1:
        out = out.repeat(scale, axis=0).repeat(scale, axis=1)
    return out


def shown_like(images: Tensor, like: Tensor) -> Tensor:
    """(N, C', H', W') images drawn in ``like``'s (N, C, H, W) grid: a smaller image enlarged
    (nearest, so its pixels stay visible), a grey one repeated into ``like``'s channels."""
    import torch.nn.functional as F

    if images.shape[-2:] != like.shape[-2:]:
        images = F.interpolate(images.float(), size=tuple(like.shape[-2:]), mode="nearest")
    if images.shape[1] == 1 and like.shape[1] != 1:
        images = images.expand(-1, like.shape[1], -1, -1)
    return images


def save_image(path: str | os.PathLike[str], array: np.ndarray) -> None:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    write_bytes(path, buf.getvalue())


def reconstruction_grid(path: str | os.PathLike[str], originals: Tensor,
                        reconstructions: Mapping[str, Tensor] | Tensor, scale: int | None = None) -> None:
    """Top row: originals; one row per model below (labelled in a matplotlib figure)."""
    if isinstance(reconstructions, Tensor):
        reconstructions = {"reconstruction": reconstructions}
    labelled_grid(path, {"input": originals, **reconstructions}, "reconstructions", scale=scale)


def labelled_grid(path: str | os.PathLike[str], rows: Mapping[str, Tensor], title: str,
                  scale: int | None = None) -> None:
    """One row of (N, C, H, W) images per entry of ``rows``, labelled with its key, under ``title``."""
    first = next(iter(rows.values()))
    scale = scale or max(1, 64 // first.shape[-2])
    grid = image_grid(list(rows.values()), scale=scale)
    plt = _pyplot()
    n_rows = len(rows)
    fig, ax = plt.subplots(figsize=(max(4.0, grid.shape[1] / 80), max(1.5, grid.shape[0] / 80)))
    ax.imshow(grid, interpolation="nearest")
    row_h = grid.shape[0] / n_rows
    ax.set_yticks([row_h * (i + 0.5) for i in range(n_rows)])
    ax.set_yticklabels(list(rows))
    ax.set_xticks([])
    ax.set_title(title)
    _figure_to_png(fig, path)


def loss_curves(path: str | os.PathLike[str], histories: Mapping[str, Sequence[Mapping[str, Any]]],
                keys: Sequence[str] = ("train_recon", "val_recon")) -> None:
    """One line per run and key (e.g. train vs validation reconstruction error), log scale."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, hist) in enumerate(histories.items()):
        for key, style in zip(keys, ("-", "--", ":"), strict=False):
            pts = [(h["epoch"], h[key]) for h in hist if key in h and h[key] is not None]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, style, color=colours[i % len(colours)], marker="." if len(xs) < 30 else None,
                        label=f"{name} {key.replace('_', ' ')}")  # a marker: one epoch is a point
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    _figure_to_png(fig, path)





def rate_distortion(path: str | os.PathLike[str],
                    curves: Mapping[str, Sequence[tuple[float, float]]], ylabel: str, title: str) -> None:
    """Quality against bits per pixel, one line per codec (learned codecs solid, classic dashed)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, points in curves.items():
        if points:
            xs, ys = zip(*sorted(points), strict=True)
            classic = name.lower() in ("jpeg", "webp")
            ax.plot(xs, ys, "--s" if classic else "-o", ms=4, label=name)
    ax.set_xlabel("bits per pixel")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _figure_to_png(fig, path)
