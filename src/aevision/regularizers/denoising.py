"""Denoising: corrupt the input, reconstruct the clean image (Vincent et al. 2008).

The same corruptions serve restoration (:mod:`aevision.tasks.restore`): a denoiser is trained on
them and evaluated on them, with a seeded generator so that every method sees the same noise.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from aevision.regularizers.base import Regularizer
from aevision.regularizers.registry import REGULARIZERS
from aevision.validation import check

Noise = Literal["gaussian", "masking", "salt_pepper", "blocks"]


def block_mask(shape: tuple[int, ...], p: float, block: int,
               generator: torch.Generator | None = None, device: torch.device | str | None = None) -> Tensor:
    """(N, 1, H, W) bool, True in random ``block`` x ``block`` squares (clipped at the borders).

    Each image gets ceil(p * H * W / block^2) squares at uniform positions, so about a fraction
    ``p`` of it is covered (a little less where squares overlap): the holes of inpainting.
    """
    n, h, w = shape[0], shape[-2], shape[-1]
    count = max(1, -(-round(p * h * w) // (block * block))) if p > 0 else 0
    mask = torch.zeros(n, 1, h, w, dtype=torch.bool, device=device)
    if count == 0:
        return mask
    tops = torch.randint(-(block - 1), h, (n, count), generator=generator).tolist()
    lefts = torch.randint(-(block - 1), w, (n, count), generator=generator).tolist()
    for i in range(n):
        for top, left in zip(tops[i], lefts[i], strict=True):
            mask[i, 0, max(top, 0):top + block, max(left, 0):left + block] = True
    return mask


def corrupt(
    x: Tensor, noise: Noise, sigma: float = 0.3, p: float = 0.25, clip: bool = True,
    generator: torch.Generator | None = None, sigma_max: float | None = None, block: int = 8,
) -> Tensor:
    """``x`` in [0, 1] with noise: Gaussian (std ``sigma``, or per image uniform in
    [``sigma``, ``sigma_max``]), masking (zero a fraction ``p`` of pixels), salt-and-pepper (a
    fraction ``p`` of pixels set to 0 or 1), or blocks (zero ``block``-sized squares covering
    about a fraction ``p``)."""
    if noise == "gaussian":
        std: Tensor | float = sigma
        if sigma_max is not None:
            u = torch.rand((x.shape[0],) + (1,) * (x.dim() - 1), generator=generator, device=x.device)
            std = sigma + (sigma_max - sigma) * u.to(x.dtype)
        out = x + std * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return out.clamp(0.0, 1.0) if clip else out
    if noise == "blocks":
        return x.masked_fill(block_mask(tuple(x.shape), p, block, generator, x.device), 0.0)
    # masking / salt-and-pepper act on whole pixels: one draw per location, shared by channels
    shape = (x.shape[0], 1, *x.shape[2:])
    hit = torch.rand(shape, generator=generator, device=x.device) < p
    if noise == "masking":
        return x.masked_fill(hit, 0.0)
    salt = torch.rand(shape, generator=generator, device=x.device) < 0.5
    return torch.where(hit, salt.to(x.dtype), x)


@REGULARIZERS.register("denoising", "denoising: train on corrupted inputs (gaussian, masking, salt_pepper, "
                       "blocks)")
class Denoising(Regularizer):
    """``sigma_max`` trains a blind denoiser over a range of Gaussian noise levels."""

    def __init__(self, *, noise: Noise = "gaussian", sigma: float = 0.3, p: float = 0.25,
                 clip: bool = True, sigma_max: float | None = None, block: int = 8):
        super().__init__()
        check(sigma >= 0, "sigma", sigma, "a standard deviation >= 0")
        check(0 <= p <= 1, "p", p, "a fraction in [0, 1]")
        if sigma_max is not None:
            check(sigma_max >= sigma, "sigma_max", sigma_max,
                  f"a standard deviation >= sigma ({sigma}) or null")
        check(block >= 1, "block", block, "an integer >= 1")
        self.noise, self.sigma, self.p, self.clip = noise, sigma, p, clip
        self.sigma_max, self.block = sigma_max, block

    def corrupt(self, x: Tensor) -> Tensor:
        return corrupt(x, self.noise, self.sigma, self.p, self.clip, sigma_max=self.sigma_max,
                       block=self.block)

    def extra_repr(self) -> str:
        if self.noise == "gaussian":
            amount = f"sigma={self.sigma:g}" + (f"..{self.sigma_max:g}" if self.sigma_max is not None else "")
        else:
            amount = f"p={self.p:g}" + (f", block={self.block}" if self.noise == "blocks" else "")
        return f"noise={self.noise!r}, {amount}"
