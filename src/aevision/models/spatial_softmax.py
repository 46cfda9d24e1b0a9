"""Spatial softmax (Levine et al. 2016; Finn et al. 2016): feature maps -> 2-D keypoints.

For each channel c the activations a_c over all pixels (i, j) become a distribution
s_cij = exp(a_cij / alpha) / sum_i'j' exp(a_ci'j' / alpha), and the keypoint is its expectation
(x_c, y_c) = sum_ij s_cij (x_j, y_i) on a grid running from -1 (left/top pixel centre) to +1
(right/bottom pixel centre). The temperature alpha is learned. The peak probability max_ij s_cij
is the channel's *feature presence*: near 1 when the channel fires at one place, 1/(H W) when it
fires everywhere or nowhere, so it says whether the keypoint is really locating something.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def pixel_grid(size: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Coordinates of ``size`` pixel centres, -1 to 1 (0 for a single pixel)."""
    if size == 1:
        return torch.zeros(1, device=device, dtype=dtype)
    return torch.linspace(-1.0, 1.0, size, device=device, dtype=dtype)


class SpatialSoftmax(nn.Module):
    """(N, C, H, W) activations -> keypoints (N, C, 2) as (x, y) in [-1, 1], presence (N, C)."""

    def __init__(self, temperature: float = 1.0, learn_temperature: bool = True):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        # log-parametrised so that gradient steps can never make the temperature negative
        self.log_temperature = nn.Parameter(torch.tensor(math.log(temperature)),
                                            requires_grad=learn_temperature)

    @property
    def temperature(self) -> Tensor:
        return self.log_temperature.exp()

    def forward(self, a: Tensor) -> tuple[Tensor, Tensor]:
        n, c, h, w = a.shape
        # softmax in float32 even under mixed precision: exp overflows half precision quickly
        logits = a.float().flatten(2) / self.temperature
        # softmax written out: torch.softmax's forward-mode derivative (used by the contractive
        # penalty's JVP) modifies a saved tensor in place and breaks the backward pass
        e = (logits - logits.amax(dim=-1, keepdim=True).detach()).exp()
        p = (e / e.sum(dim=-1, keepdim=True)).view(n, c, h, w)
        xs = pixel_grid(w, a.device, p.dtype)
        ys = pixel_grid(h, a.device, p.dtype)
        x = (p.sum(dim=2) * xs).sum(dim=-1)  # marginal over rows, then E[x]
        y = (p.sum(dim=3) * ys).sum(dim=-1)
        return torch.stack((x, y), dim=-1), p.flatten(2).amax(dim=-1)

    def extra_repr(self) -> str:
        learned = "learned" if self.log_temperature.requires_grad else "fixed"
        return f"temperature={float(self.temperature.detach()):.3g} ({learned})"
