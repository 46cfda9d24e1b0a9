"""Image quality: PSNR, SSIM and MS-SSIM per image (torchmetrics), on [0, 1] float images.

Per-image values are what rate-distortion work averages (CompressAI reports the mean PSNR over
Kodak's 24 images, not the PSNR of the mean error), so every function returns one value per
image. MS-SSIM needs images larger than (kernel - 1) * 2^(scales - 1) pixels: 160 for the
standard 11-pixel kernel and 5 scales; :func:`ms_ssim` falls back to fewer scales and a smaller
kernel for small images and says so in :func:`ms_ssim_settings`.

PSNR accumulates its squared errors in float64 (cheap, and exact enough for 40+ dB). SSIM and
MS-SSIM filter in float32: torchmetrics' Gaussian filtering in float64 has no fast CPU kernel and
took 6.5 s per 768x512 image (most of an hour for a JPEG/WebP quality sweep on Kodak); float32
takes 0.5 s and moves MS-SSIM by less than 1e-5.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from aevision.data.imageset import to_float

_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003


def _pairs(a: Tensor, b: Tensor, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    a, b = (to_float(t) if t.dtype == torch.uint8 else t for t in (a, b))  # floats keep their precision
    if a.dim() == 3:
        a, b = a.unsqueeze(0), b.unsqueeze(0)
    if a.shape != b.shape:
        raise ValueError(f"cannot compare images of shapes {tuple(a.shape)} and {tuple(b.shape)}")
    return a.to(dtype), b.to(dtype)


def psnr(a: Tensor, b: Tensor) -> Tensor:
    """(N,) PSNR in dB of (N, C, H, W) images in [0, 1] (or uint8); inf for identical images."""
    a, b = _pairs(a, b)
    mse = (a - b).pow(2).flatten(1).mean(1)
    return (10.0 * torch.log10(1.0 / mse)).float()


def ssim(a: Tensor, b: Tensor) -> Tensor:
    """(N,) SSIM (Gaussian window, sigma 1.5; 7 pixels wide below 11 pixels of side)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    a, b = _pairs(a, b, torch.float32)
    k = 11 if min(a.shape[-2:]) >= 11 else 7
    return structural_similarity_index_measure(a, b, data_range=1.0, kernel_size=k,
                                               reduction="none").float()


def ms_ssim_settings(height: int, width: int) -> dict[str, Any]:
    """Kernel size and scales MS-SSIM uses for an image of this size (the standard when possible)."""
    side = min(height, width)
    for kernel, scales in ((11, 5), (11, 4), (7, 4), (11, 3), (7, 3), (7, 2), (3, 2)):
        if side > (kernel - 1) * 2 ** (scales - 1):
            betas = _BETAS[:scales]
            total = sum(betas)
            return {"kernel_size": kernel, "scales": scales,
                    "betas": tuple(round(b / total, 6) for b in betas),
                    "standard": (kernel, scales) == (11, 5)}
    raise ValueError(f"images of {height}x{width} are too small for MS-SSIM")


def ms_ssim(a: Tensor, b: Tensor) -> Tensor:
    """(N,) MS-SSIM; the settings of :func:`ms_ssim_settings` for the image size."""
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

    a, b = _pairs(a, b, torch.float32)
    s = ms_ssim_settings(a.shape[-2], a.shape[-1])
    return multiscale_structural_similarity_index_measure(
        a, b, data_range=1.0, kernel_size=s["kernel_size"], betas=s["betas"], reduction="none",
        normalize="relu",  # as pytorch_msssim (CompressAI's numbers): negative terms clipped at 0
    ).float()
