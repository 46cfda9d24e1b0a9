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

``means=True`` is the mean-scale hyperprior (Minnen, Ballé & Toderici 2018, without the
autoregressive context): h_s predicts a mean mu beside each scale, z = h_a(y) sees the code's
signs, the symbols are round(y - mu) under N(0, sigma) and the decoder gets round(y - mu) + mu.
A latent whose value the side information can predict costs almost nothing, which is where the
mean-scale model saves its bits over the scale-only one. The symbols (and the file's checksum)
stay integers; mu is added back after decoding, so a last-bit difference in mu between machines
moves a latent by ~1e-16, never a symbol.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

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
    from aevision.regularizers.base import LossContext


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

    def __init__(self, code_shape: Sequence[int], *, weight: float = EntropyModel.default_weight,
                 quantizer: Quantizer = "ste", channels: int = 64, scale_min: float = 0.11,
                 scale_max: float = 256.0, levels: int = 64, means: bool = False):
        super().__init__(code_shape, weight=weight, quantizer=quantizer)
        check(channels >= 1, "channels", channels, "an integer >= 1")
        check(0 < scale_min < scale_max, "scale_min", scale_min, "a number in (0, scale_max)")
        check(levels >= 2, "levels", levels, "an integer >= 2")
        check(isinstance(means, bool), "means", means, "true or false")
        self.channels, self.scale_min, self.scale_max, self.levels = channels, scale_min, scale_max, levels
        self.means = means
        m = self.code_shape[0]
        self.h_a = hyper_analysis(m, channels)
        self.h_s = hyper_synthesis(m * (2 if means else 1), channels)
        self.z_density = FactorizedDensity(channels)

    # --- training ------------------------------------------------------------------------------

    def gaussian(self, z_hat: Tensor, size: Sequence[int], h_s: nn.Module | None = None
                 ) -> tuple[Tensor, Tensor]:
        """(sigma, mu) for every latent of y, (N, M, h, w) each: sigma at least ``scale_min``,
        mu zero unless ``means``."""
        out = (h_s or self.h_s)(z_hat)[..., :size[0], :size[1]]
        raw, mu = out.chunk(2, dim=1) if self.means else (out, torch.zeros_like(out))
        return self.scale_min + F.softplus(raw), mu

    def _hyper(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """(z_tilde priced, z_hat seen by h_s): noisy in training, rounded otherwise."""
        if not self.training:
            z_hat = torch.round(z)
            return z_hat, z_hat
        z_tilde = z + torch.empty_like(z).uniform_(-0.5, 0.5)
        return z_tilde, z_tilde if self.quantizer == "noise" else z + (torch.round(z) - z).detach()

    def bits(self, ctx: LossContext) -> Tensor:
        if self.means:  # priced in transform_code_with_aux, which needs mu before the decoder runs
            y_tilde, sigma, z_tilde = ctx.aux_of(self)
        else:
            y_tilde, q = self.priced(ctx)
            z_tilde, z_hat = self._hyper(self.h_a(q.abs()))
            sigma = self.gaussian(z_hat, (q.shape[-2], q.shape[-1]))[0]
        nats = -gaussian_log_likelihood(y_tilde, sigma).sum() - self.z_density.log_likelihood(z_tilde).sum()
        return nats / math.log(2.0)

    def transform_code_with_aux(self, z: Tensor) -> tuple[Tensor, Any]:
        """Without ``means``, as every entropy model; with them the code the decoder sees is
        round(y - mu) + mu, and the aux is what the rate prices: (y_tilde - mu, sigma, z_tilde)."""
        if not self.means:
            return super().transform_code_with_aux(z)
        with torch.autocast(z.device.type, enabled=False):  # small nets; mu decides the rounding
            y = self.spatial(z).float()
            z_tilde, z_hat = self._hyper(self.h_a(y))
            sigma, mu = self.gaussian(z_hat, (y.shape[-2], y.shape[-1]))
            if not self.training:
                y_hat = torch.round(y - mu) + mu
                priced = y_hat - mu
            elif self.quantizer == "noise":
                y_hat = y + torch.empty_like(y).uniform_(-0.5, 0.5)
                priced = y_hat - mu
            else:  # the decoder sees round(y - mu) + mu, the rate prices y + noise
                y_hat = y + (torch.round(y - mu) + mu - y).detach()
                priced = y + torch.empty_like(y).uniform_(-0.5, 0.5) - mu
        return y_hat.flatten(1), (priced, sigma, z_tilde)

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
            self._cache["z"] = self.z_density.tables()
        return self._cache["z"]  # type: ignore[return-value]

    @torch.no_grad()
    def _levels(self, z_hat: Tensor) -> tuple[np.ndarray, Tensor]:
        """The scale-table index of every latent of y, and its mean ((1, M, h, w) float64, zero
        without ``means``), from float64 hyper-synthesis."""
        if "h_s64" not in self._cache:
            self._cache["h_s64"] = copy.deepcopy(self.h_s).cpu().double()
        sigma, mu = self.gaussian(z_hat.double(), self.code_shape[1:], self._cache["h_s64"])  # type: ignore[arg-type]
        step = (math.log(self.scale_max) - math.log(self.scale_min)) / (self.levels - 1)
        index = torch.round((torch.log(sigma[0]) - math.log(self.scale_min)) / step)
        return index.clamp(0, self.levels - 1).to(torch.int64).numpy(), mu

    def _z_ids(self) -> np.ndarray:
        hz, wz = hyper_size(*self.code_shape[1:])
        return np.broadcast_to(np.arange(self.channels).reshape(-1, 1, 1), (self.channels, hz, wz))

    @torch.no_grad()
    def encode_latents(self, y: Tensor, writer: SymbolWriter) -> tuple[Tensor, Tensor]:
        device = next(self.h_a.parameters()).device
        hyper_in = y.float() if self.means else quantize_for_coding(y).float().abs()
        z_hat = quantize_for_coding(self.h_a(hyper_in.to(device)))
        writer.write(z_hat[0].numpy().astype(np.int64), self._z_ids(), self._z_tables())
        index, mu = self._levels(z_hat)
        q = quantize_for_coding(y.detach().cpu().double() - mu)
        writer.write(q[0].numpy().astype(np.int64), index, self._gaussian_tables())
        return q.float(), (q + mu).float()

    @torch.no_grad()
    def decode_latents(self, reader: SymbolReader) -> tuple[Tensor, Tensor]:
        z_hat = torch.from_numpy(reader.read(self._z_ids(), self._z_tables())).double().unsqueeze(0)
        index, mu = self._levels(z_hat)
        q = torch.from_numpy(reader.read(index, self._gaussian_tables())).double().unsqueeze(0)
        return q.float(), (q + mu).float()

    def extra_repr(self) -> str:
        return super().extra_repr() + f", channels={self.channels}, levels={self.levels}, means={self.means}"
