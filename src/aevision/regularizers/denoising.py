"""Denoising: corrupt the input, reconstruct the clean image (Vincent et al. 2008)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from aevision.regularizers.base import Regularizer
from aevision.regularizers.registry import REGULARIZERS
from aevision.validation import check

Noise = Literal["gaussian", "masking", "salt_pepper"]


def corrupt(
    x: Tensor, noise: Noise, sigma: float = 0.3, p: float = 0.25, clip: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """``x`` in [0, 1] with noise: Gaussian (std ``sigma``), masking (zero a fraction ``p`` of
    pixels), or salt-and-pepper (a fraction ``p`` of pixels set to 0 or 1)."""
    if noise == "gaussian":
        out = x + sigma * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return out.clamp(0.0, 1.0) if clip else out
    # masking / salt-and-pepper act on whole pixels: one draw per location, shared by channels
    shape = (x.shape[0], 1, *x.shape[2:])
    hit = torch.rand(shape, generator=generator, device=x.device) < p
    if noise == "masking":
        return x.masked_fill(hit, 0.0)
    salt = torch.rand(shape, generator=generator, device=x.device) < 0.5
    return torch.where(hit, salt.to(x.dtype), x)


@REGULARIZERS.register("denoising", "denoising: train on corrupted inputs (gaussian, masking, salt_pepper)")
class Denoising(Regularizer):
    def __init__(self, *, noise: Noise = "gaussian", sigma: float = 0.3, p: float = 0.25,
                 clip: bool = True):
        super().__init__()
        check(sigma >= 0, "sigma", sigma, "a standard deviation >= 0")
        check(0 <= p <= 1, "p", p, "a fraction in [0, 1]")
        self.noise, self.sigma, self.p, self.clip = noise, sigma, p, clip

    def corrupt(self, x: Tensor) -> Tensor:
        return corrupt(x, self.noise, self.sigma, self.p, self.clip)

    def extra_repr(self) -> str:
        amount = f"sigma={self.sigma:g}" if self.noise == "gaussian" else f"p={self.p:g}"
        return f"noise={self.noise!r}, {amount}"
