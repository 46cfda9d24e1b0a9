"""``hyperprior``: a scale hyperprior entropy model (Ballé, Minnen, Singh, Hwang & Johnston 2018).

The code y gets a zero-mean Gaussian per latent, whose scale is predicted from side information:

    z = h_a(|y_hat|)        hyper-analysis, two stride-2 stages: 1/4 of y's resolution
    z_hat = round(z)        coded first, under a factorized density (one per channel)
    sigma = h_s(z_hat)      hyper-synthesis back to y's resolution
    rate = -log2 P(z_hat) - log2 P(y_hat | sigma)

The side information costs a few percent of the bits and buys spatially adaptive scales: flat
sky gets a narrow Gaussian, texture a wide one. For coding, the scales are snapped to a fixed
log-spaced table of ``levels`` values, so that encoder and decoder pick identical discrete
tables; ``h_s`` is evaluated in float64 there, so that no last-bit difference between machines
moves a scale across a level boundary (the file's latent checksum would catch it).
"""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aevision.coding.tables import ProbabilityTables, from_cdf
from aevision.regularizers.entropy import (
    TAIL_MASS,
    EntropyModel,
    FactorizedDensity,
    Quantizer,
    gaussian_log_likelihood,
    quantize_for_coding,
)
from aevision.regularizers.registry import REGULARIZERS
from aevision.validation import check

if TYPE_CHECKING:
    from aevision.coding.rangecoder import SymbolReader, SymbolWriter


def hyper_analysis(m: int, n: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(m, n, 3, 1, 1), nn.ReLU(),
        nn.Conv2d(n, n, 5, 2, 2), nn.ReLU(),
        nn.Conv2d(n, n, 5, 2, 2),
    )


def hyper_synthesis(m: int, n: int) -> nn.Sequential:
    """Upsamples by exactly 4; the caller crops to y's size."""
    return nn.Sequential(
        nn.ConvTranspose2d(n, n, 5, 2, 2, output_padding=1), nn.ReLU(),
        nn.ConvTranspose2d(n, n, 5, 2, 2, output_padding=1), nn.ReLU(),
        nn.Conv2d(n, m, 3, 1, 1),
    )


def hyper_size(h: int, w: int) -> tuple[int, int]:
    """Spatial size of z for a code of size h x w (two ceil-halvings)."""
    return (h + 3) // 4, (w + 3) // 4


@REGULARIZERS.register("hyperprior", "entropy model: Gaussian per latent with scales from a coded "
                       "hyperprior (Ballé et al. 2018); term 'rate' in bits per pixel")
class Hyperprior(EntropyModel):
    registry_name = "hyperprior"

    def __init__(self, *, quantizer: Quantizer = "ste", channels: int = 64, scale_min: float = 0.11,
                 scale_max: float = 256.0, levels: int = 64):
        super().__init__(quantizer=quantizer)
        check(channels >= 1, "channels", channels, "an integer >= 1")
        check(0 < scale_min < scale_max, "scale_min", scale_min, "a number in (0, scale_max)")
        check(levels >= 2, "levels", levels, "an integer >= 2")
        self.channels, self.scale_min, self.scale_max, self.levels = channels, scale_min, scale_max, levels
        self.h_a: nn.Sequential | None = None
        self.h_s: nn.Sequential | None = None
        self.z_density: FactorizedDensity | None = None

    def bind(self, channels: int) -> None:
        if self.h_a is None or self.h_a[0].in_channels != channels:
            self.h_a = hyper_analysis(channels, self.channels)
            self.h_s = hyper_synthesis(channels, self.channels)
            self.z_density = FactorizedDensity(self.channels)

    # --- training ------------------------------------------------------------------------------

    def scales(self, z_hat: Tensor, size: tuple[int, int], h_s: nn.Module | None = None) -> Tensor:
        """sigma for every latent of y: (N, M, h, w), at least ``scale_min``."""
        out = (h_s or self.h_s)(z_hat)[..., :size[0], :size[1]]  # type: ignore[operator]
        return self.scale_min + F.softplus(out)

    def bits(self, y_tilde: Tensor, q: Tensor) -> Tensor:
        assert self.h_a is not None and self.z_density is not None
        z = self.h_a(q.abs())
        if self.training:
            z_tilde = z + torch.empty_like(z).uniform_(-0.5, 0.5)
            z_hat = z_tilde if self.quantizer == "noise" else z + (torch.round(z) - z).detach()
        else:
            z_tilde = z_hat = torch.round(z)
        sigma = self.scales(z_hat, (q.shape[-2], q.shape[-1]))
        nats = -gaussian_log_likelihood(y_tilde, sigma).sum() - self.z_density.log_likelihood(z_tilde).sum()
        return nats / math.log(2.0)

    # --- coding --------------------------------------------------------------------------------

    def scale_table(self) -> np.ndarray:
        return np.exp(np.linspace(math.log(self.scale_min), math.log(self.scale_max), self.levels))

    def _gaussian_tables(self) -> ProbabilityTables:
        if "gaussian" not in self._cache:
            los, halves = [], []
            tail = -float(torch.special.ndtri(torch.tensor(TAIL_MASS / 2, dtype=torch.float64)))
            for sigma in self.scale_table():
                r = math.ceil(sigma * tail)
                pts = torch.arange(-r, r + 2, dtype=torch.float64) - 0.5
                halves.append(torch.special.ndtr(pts / float(sigma)).numpy())
                los.append(-r)
            self._cache["gaussian"] = from_cdf(np.asarray(los, dtype=np.int64), halves)
        return self._cache["gaussian"]  # type: ignore[return-value]

    def _z_tables(self) -> ProbabilityTables:
        if "z" not in self._cache:
            assert self.z_density is not None
            self._cache["z"] = self.z_density.tables()
        return self._cache["z"]  # type: ignore[return-value]

    @torch.no_grad()
    def _levels(self, z_hat: Tensor) -> np.ndarray:
        """The scale-table index of every latent of y, from float64 hyper-synthesis."""
        if "h_s64" not in self._cache:
            self._cache["h_s64"] = copy.deepcopy(self.h_s).cpu().double()
        assert self.code_shape is not None
        sigma = self.scales(z_hat.double(), self.code_shape[1:], self._cache["h_s64"])[0]  # type: ignore[arg-type]
        step = (math.log(self.scale_max) - math.log(self.scale_min)) / (self.levels - 1)
        index = torch.round((torch.log(sigma) - math.log(self.scale_min)) / step)
        return index.clamp(0, self.levels - 1).to(torch.int64).numpy()

    def _z_ids(self) -> np.ndarray:
        assert self.code_shape is not None
        hz, wz = hyper_size(*self.code_shape[1:])
        return np.broadcast_to(np.arange(self.channels).reshape(-1, 1, 1), (self.channels, hz, wz))

    @torch.no_grad()
    def encode_latents(self, y: Tensor, writer: SymbolWriter) -> Tensor:
        assert self.h_a is not None
        q = quantize_for_coding(y).float()
        device = next(self.h_a.parameters()).device
        z_hat = quantize_for_coding(self.h_a(q.abs().to(device)))
        writer.write(z_hat[0].numpy().astype(np.int64), self._z_ids(), self._z_tables())
        writer.write(q[0].numpy().astype(np.int64), self._levels(z_hat), self._gaussian_tables())
        return q

    @torch.no_grad()
    def decode_latents(self, reader: SymbolReader) -> Tensor:
        z_hat = torch.from_numpy(reader.read(self._z_ids(), self._z_tables())).double().unsqueeze(0)
        values = reader.read(self._levels(z_hat), self._gaussian_tables())
        return torch.from_numpy(values).float().unsqueeze(0)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", channels={self.channels}, levels={self.levels}"
