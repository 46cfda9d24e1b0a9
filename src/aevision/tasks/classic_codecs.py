"""What users compress with otherwise: Pillow's JPEG and WebP, at their strongest settings.

JPEG uses optimized Huffman tables (``optimize=True``, smaller files at the same quality) and
4:2:0 chroma subsampling (Pillow's default); WebP uses its slowest, best method (``method=6``).
The byte count is the whole file as Pillow writes it, headers included, as for aevision.
"""

from __future__ import annotations

import io
from typing import Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor

Format = Literal["jpeg", "webp"]
QUALITIES: dict[str, tuple[int, ...]] = {
    "jpeg": (1, 3, 5, 8, 10, 12, 15, 20, 25, 30, 40, 50, 60, 70, 80, 90, 95),
    "webp": (0, 2, 5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 95),
}


def roundtrip(image: Tensor, fmt: Format, quality: int) -> tuple[Tensor, int]:
    """(C, H, W) uint8 -> (decoded image, file size in bytes)."""
    arr = image.permute(1, 2, 0).numpy()
    grey = arr.shape[2] == 1
    pil = Image.fromarray(arr[:, :, 0] if grey else arr, mode="L" if grey else "RGB")
    buf = io.BytesIO()
    if fmt == "jpeg":
        pil.save(buf, format="JPEG", quality=quality, optimize=True)
    else:
        pil.save(buf, format="WEBP", quality=quality, method=6)
    data = buf.getvalue()
    with Image.open(io.BytesIO(data)) as decoded:
        out = np.asarray(decoded.convert("L" if grey else "RGB"))
    out = out[:, :, None] if out.ndim == 2 else out
    return torch.from_numpy(out.transpose(2, 0, 1).copy()), len(data)
