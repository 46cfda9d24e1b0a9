"""What users restore with otherwise: scikit-image's classical denoisers and inpainting.

- ``tv``: total-variation denoising (Chambolle), ``weight`` trades smoothness for fidelity;
- ``nlm``: non-local means, ``h = h_factor * sigma`` with the true noise sigma given (an oracle
  the autoencoder does not get);
- ``median``: a 3x3 median filter, the textbook answer to salt-and-pepper noise;
- ``biharmonic``: biharmonic inpainting of the holes.

Parameters are tuned on validation images (:func:`tune`), never on the test images.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from aevision.errors import AevisionError
from aevision.tasks.quality import psnr


def _skimage() -> Any:
    try:
        import skimage.restoration
    except ImportError:  # pragma: no cover - declared dependency
        raise AevisionError("classical baselines need scikit-image: pip install scikit-image") from None
    return skimage.restoration


def _per_image(images: Tensor, fn: Callable[[np.ndarray, int], np.ndarray]) -> Tensor:
    """Apply ``fn(HWC float64 array, index)`` to each (C, H, W) image."""
    out = []
    for i, img in enumerate(images):
        arr = img.double().permute(1, 2, 0).numpy()
        res = np.asarray(fn(arr, i), dtype=np.float64).reshape(arr.shape)
        out.append(torch.from_numpy(res).permute(2, 0, 1))
    return torch.stack(out).float().clamp(0, 1)


def tv(noisy: Tensor, weight: float) -> Tensor:
    sk = _skimage()
    return _per_image(noisy, lambda a, _: sk.denoise_tv_chambolle(a, weight=weight, channel_axis=-1))


def nlm(noisy: Tensor, sigma: float, h_factor: float = 0.8) -> Tensor:
    sk = _skimage()
    patch = 5 if min(noisy.shape[-2:]) >= 64 else 3
    return _per_image(noisy, lambda a, _: sk.denoise_nl_means(
        a, h=h_factor * sigma, sigma=sigma, fast_mode=True, patch_size=patch, patch_distance=6,
        channel_axis=-1))


def median(noisy: Tensor, size: int = 3) -> Tensor:
    from scipy.ndimage import median_filter

    return _per_image(noisy, lambda a, _: median_filter(a, size=(size, size, 1)))


def biharmonic(damaged: Tensor, holes: Tensor) -> Tensor:
    sk = _skimage()
    masks = holes[:, 0].numpy()
    return _per_image(damaged, lambda a, i: sk.inpaint_biharmonic(a, masks[i], channel_axis=-1))


def tune(method: Callable[..., Tensor], grid: Sequence[Any], clean: Tensor, noisy: Tensor,
         name: str = "param", **fixed: Any) -> tuple[Any, dict[str, float]]:
    """The value of ``name`` in ``grid`` with the best mean PSNR on (clean, noisy) validation
    images, and the PSNR of every value tried."""
    scores = {}
    for value in grid:
        scores[str(value)] = float(psnr(method(noisy, **{name: value}, **fixed), clean).mean())
    best = max(grid, key=lambda v: scores[str(v)])
    return best, scores
