"""Reading image files into tensors, whatever their mode, orientation or defects.

User folders are messy: 16-bit greyscale scans, palette PNGs with transparency, phone JPEGs
rotated by an EXIF tag, truncated downloads, stray text files, decompression bombs. Each file
either becomes a clean (C, H, W) uint8 tensor or a :class:`BadImage` with a reason.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from aevision.errors import DataError

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)
# Pillow's default bomb limit (~89 Mpx) is far beyond any image a training set needs.
MAX_PIXELS = 64_000_000

_GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})

# How an image of another size is brought to the one a model takes: ``stretch`` scales each side
# on its own (the aspect ratio changes), ``crop`` scales to cover and cuts the borders (centred),
# ``pad`` scales to fit and adds black borders (centred); None: it is an error.
Fit = Literal["stretch", "crop", "pad"]
FITS: tuple[Fit, ...] = ("stretch", "crop", "pad")


class BadImage(Exception):
    """A file that cannot be used as an image; ``str()`` is the reason."""


# what operating systems leave in folders and archives: never an image of the user's
SYSTEM_NAMES = frozenset({"__MACOSX", "Thumbs.db", "desktop.ini"})


def is_hidden(name: str) -> bool:
    """A file or folder name that is not the user's data: hidden (``.DS_Store``, ``.git``) or an
    operating system's (macOS's ``__MACOSX`` in zips, Windows's ``Thumbs.db``)."""
    return name.startswith(".") or name in SYSTEM_NAMES


def visible_tree(root: Path) -> list[Path]:
    """Everything under ``root``, subfolders searched, in sorted order, without hidden or system
    entries nor anything inside a hidden folder (see :func:`is_hidden`)."""
    return sorted(p for p in root.rglob("*")
                  if not any(is_hidden(part) for part in p.relative_to(root).parts))


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def image_files(inputs: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Files as given, folders expanded to their image files (not hidden ones) in sorted order."""
    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and is_image_path(p)
                           and not is_hidden(p.name))
            if not found:
                raise DataError(f"{path}: no image files in this folder")
            paths += found
        elif path.is_file():
            paths.append(path)
        else:
            raise DataError(f"{path}: no such file or folder")
    return paths


def open_image(path: str | os.PathLike[str]) -> Image.Image:
    """Open and fully decode ``path``, EXIF orientation applied; raise :class:`BadImage`."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise BadImage("empty file")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            old = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = MAX_PIXELS
            try:
                with Image.open(path) as img:
                    img.load()
                    img = ImageOps.exif_transpose(img) or img
                    img.load()
                    return img
            finally:
                Image.MAX_IMAGE_PIXELS = old
    except BadImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadImage(f"larger than {MAX_PIXELS:,} pixels (decompression-bomb limit)") from None
    except UnidentifiedImageError:
        raise BadImage("not an image file Pillow can read") from None
    except FileNotFoundError:
        raise BadImage("file not found") from None
    except (OSError, SyntaxError, ValueError) as e:  # truncated or corrupt data
        raise BadImage(f"corrupt or truncated image ({e})") from None


def is_grey(img: Image.Image) -> bool:
    return img.mode in _GREY_MODES


def to_array(img: Image.Image, channels: int) -> np.ndarray:
    """Convert any Pillow mode to an (H, W, channels) uint8 array."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        # 16/32-bit data: scale the 16-bit range down instead of clipping at 255
        arr = np.asarray(img, dtype=np.float64)
        scale = 65535.0 if img.mode != "F" or arr.max() > 1.0 else 1.0
        grey = np.clip(np.round(arr / scale * 255.0), 0, 255).astype(np.uint8)
        img = Image.fromarray(grey, mode="L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if channels == 1:
        img = img.convert("L")
    elif channels == 3:
        img = img.convert("RGB")
    else:
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    arr = np.asarray(img, dtype=np.uint8)
    return arr[:, :, None] if arr.ndim == 2 else arr


def load_image(
    path: str | os.PathLike[str], channels: int, size: Sequence[int] | None = None
) -> Tensor:
    """One file -> (channels, H, W) uint8, stretched to ``size`` = (H, W) when given."""
    return load_sized(path, channels, size)[0]


def load_sized(path: str | os.PathLike[str], channels: int, size: Sequence[int] | None = None,
               fit: Fit | None = "stretch") -> tuple[Tensor, tuple[int, int]]:
    """One file -> ((channels, H, W) uint8 brought to ``size`` by ``fit``, the (H, W) the file had).

    With ``fit=None`` an image of another size is a :class:`DataError` naming it and the modes.
    """
    arr = to_array(open_image(path), channels)
    native = (int(arr.shape[0]), int(arr.shape[1]))
    if size is not None and native != (size[0], size[1]):
        if fit is None:
            raise DataError(f"{path}: a {native[0]}x{native[1]} image, the model takes {size[0]}x{size[1]}: "
                            f"give --resize stretch, crop or pad (stretch changes the aspect ratio, crop "
                            f"cuts the borders, pad adds black ones)")
        arr = fit_array(arr, (int(size[0]), int(size[1])), fit)
    return torch.from_numpy(arr.transpose(2, 0, 1).copy()), native


def fit_array(arr: np.ndarray, size: tuple[int, int], fit: Fit) -> np.ndarray:
    """(H, W, C) uint8 -> (size[0], size[1], C), bilinear, by ``fit`` (see :data:`FITS`)."""
    grey = arr.shape[2] == 1
    pil = Image.fromarray(arr[:, :, 0] if grey else arr, mode="L" if grey else "RGB")
    wh = (size[1], size[0])
    if fit == "stretch":
        pil = pil.resize(wh, Image.Resampling.BILINEAR, reducing_gap=3.0)
    elif fit == "crop":
        pil = ImageOps.fit(pil, wh, Image.Resampling.BILINEAR)
    elif fit == "pad":
        pil = ImageOps.pad(pil, wh, Image.Resampling.BILINEAR, color=0)
    else:
        raise ValueError(f"fit must be one of {', '.join(FITS)}, got {fit!r}")
    out = np.asarray(pil, dtype=np.uint8)
    return out[:, :, None] if out.ndim == 2 else out


def read_image(path: str | os.PathLike[str], channels: int, size: Sequence[int] | None = None) -> Tensor:
    """:func:`load_image`, a file that is not a usable image being a one-line error naming it."""
    try:
        return load_image(path, channels, size)
    except BadImage as e:
        raise DataError(f"{path}: {e}") from None


def to_hwc(image: Tensor) -> np.ndarray:
    """(C, H, W) uint8 -> the array Pillow writes: (H, W) for one channel, else (H, W, C)."""
    arr = image.permute(1, 2, 0).numpy()
    return arr[:, :, 0] if arr.shape[2] == 1 else arr


def peek_is_grey(path: Path) -> bool | None:
    """Whether a file is greyscale, reading only its header (None if unreadable)."""
    try:
        with Image.open(path) as img:
            return is_grey(img)
    except Exception:
        return None


def decode_many(
    paths: Iterable[Path], channels: int, size: Sequence[int] | None, workers: int | None = None
) -> list[Tensor | BadImage]:
    """Decode files in parallel threads (Pillow releases the GIL while decoding), stretched to
    ``size`` when given."""
    decoded = decode_sized(paths, channels, size, workers=workers)
    return [r if isinstance(r, BadImage) else r[0] for r in decoded]


def decode_sized(
    paths: Iterable[Path], channels: int, size: Sequence[int] | None, fit: Fit | None = "stretch",
    workers: int | None = None,
) -> list[tuple[Tensor, tuple[int, int]] | BadImage]:
    """:func:`load_sized` over files in parallel threads; a file that is no image is a
    :class:`BadImage` in its place (and with ``fit=None`` the first of another size stops it)."""
    paths = list(paths)
    workers = workers or min(8, os.cpu_count() or 1)

    def one(p: Path) -> tuple[Tensor, tuple[int, int]] | BadImage:
        try:
            return load_sized(p, channels, size, fit)
        except BadImage as e:
            return e

    if workers <= 1 or len(paths) < 16:
        return [one(p) for p in paths]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, paths, chunksize=16))
