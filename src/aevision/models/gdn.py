"""Generalized divisive normalization (Ballé, Laparra & Simoncelli 2016).

``GDN``:  y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2)
``IGDN``: y_i = x_i * sqrt(beta_i + sum_j gamma_ij x_j^2)   (its approximate inverse, for decoders)

A learned, channel-coupled normalization that Gaussianizes the responses of a linear filter
bank: the nonlinearity of choice for learned image codecs, where it matches deeper ReLU stacks at
a fraction of the compute (one 1x1 convolution of the squared input). ``beta`` and ``gamma`` are
stored as square roots so that they stay non-negative under unconstrained gradient steps;
``beta`` keeps a floor so the denominator never reaches zero.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class GDN(nn.Module):
    """(N, C, H, W) -> same shape; ``inverse=True`` multiplies instead of dividing (IGDN)."""

    def __init__(self, channels: int, inverse: bool = False, beta_min: float = 1e-6,
                 gamma_init: float = 0.1):
        super().__init__()
        self.channels, self.inverse, self.beta_min = channels, inverse, beta_min
        self.beta_sqrt = nn.Parameter(torch.ones(channels))
        self.gamma_sqrt = nn.Parameter(torch.eye(channels) * gamma_init**0.5)

    def forward(self, x: Tensor) -> Tensor:
        beta = self.beta_sqrt.pow(2) + self.beta_min
        gamma = self.gamma_sqrt.pow(2).view(self.channels, self.channels, 1, 1)
        norm = F.conv2d(x * x, gamma, beta).sqrt()
        return x * norm if self.inverse else x / norm

    def extra_repr(self) -> str:
        return f"{self.channels}, inverse={self.inverse}"
