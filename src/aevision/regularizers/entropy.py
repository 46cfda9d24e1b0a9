"""Entropy models: quantize a spatial code and price it in bits, so that an autoencoder is a codec.

Learned image compression (Ballé, Laparra & Simoncelli 2017; Ballé et al. 2018) minimizes
``distortion + weight * rate``: the code is rounded to integers (the decoder sees ``round(y)``),
and the rate is ``-log2 P(round(y))`` under a learned entropy model, the length a range coder
actually spends. Rounding has no gradient, so training prices ``y + u``, u ~ U(-1/2, 1/2), whose
density is the model's density convolved with the unit box and equals P at integers; the decoder
gets ``round(y)`` with a straight-through gradient (``quantizer="ste"``, the mixed scheme of
Minnen & Singh 2020: no train/test mismatch in the decoder) or the noisy ``y + u`` itself
(``quantizer="noise"``, Ballé's original).

As regularizers: ``transform_code`` quantizes (at every encode) and hands the penalty the code
before quantization (``transform_code_with_aux``), ``penalty`` is the rate in bits per pixel.
The entropy model's own modules are sized to the code: it is built for the code shape the
architecture declares (``notes["code_shape"]``), which ``build_model`` passes to its
constructor. The codec (:mod:`aevision.tasks.compress`) then uses ``encode_latents`` /
``decode_latents``, which hand integer symbols and their probability tables to the range coder.
``factorized``: one learned density per code channel. ``hyperprior`` (in
:mod:`aevision.regularizers.hyperprior`): a Gaussian per latent whose scale is side information.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aevision.coding.tables import ProbabilityTables, from_cdf
from aevision.errors import ConfigError
from aevision.regularizers.base import Regularizer
from aevision.regularizers.registry import REGULARIZERS
from aevision.validation import check

if TYPE_CHECKING:
    from aevision.coding.rangecoder import SymbolReader, SymbolWriter
    from aevision.regularizers.base import CodeModel, LossContext

Quantizer = Literal["ste", "noise"]
TAIL_MASS = 1e-9  # probability left to the escape symbols of each table
LATENT_LIMIT = 1 << 30  # latents are clipped to +-this before coding (far beyond any real code)
MAX_TABLE_BOUND = 4096  # tables span at most +-this; rarer values are escaped


def log1mexp(x: Tensor) -> Tensor:
    """log(1 - exp(x)) for x < 0, accurate at both ends (Mächler 2012)."""
    x = x.clamp_max(-1e-12)
    return torch.where(x > -math.log(2.0), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def log_bin_mass_logistic(upper: Tensor, lower: Tensor) -> Tensor:
    """log(sigmoid(upper) - sigmoid(lower)) for upper > lower, computed in the far tail.

    When both logits are large the difference of two sigmoids near 1 cancels; reflecting both
    to the lower tail (sigmoid(-x) = 1 - sigmoid(x)) keeps the precision.
    """
    flip = (upper + lower) > 0
    hi = torch.where(flip, -lower, upper)
    lo = torch.where(flip, -upper, lower)
    lhi = F.logsigmoid(hi)
    return lhi + log1mexp(F.logsigmoid(lo) - lhi)


def gaussian_log_likelihood(y: Tensor, scale: Tensor) -> Tensor:
    """log P(y - 1/2 < Y < y + 1/2) for Y ~ N(0, scale^2); by symmetry in the lower tail."""
    v = y.abs()
    upper = torch.special.log_ndtr((0.5 - v) / scale)
    lower = torch.special.log_ndtr((-0.5 - v) / scale)
    return upper + log1mexp(lower - upper)


class FactorizedDensity(nn.Module):
    """One learned univariate density per channel (Ballé et al. 2018, appendix 6.1).

    The CDF of channel c is ``sigmoid(f_K o ... o f_1(x))`` with
    ``f_k(x) = g_k(softplus(H_k) x + b_k)`` and ``g_k(x) = x + tanh(a_k) * tanh(x)``: positive
    matrices and these gated nonlinearities keep it monotone, so any unimodal or multimodal
    shape the code takes can be fitted. ``filters`` are the widths of the hidden layers.

    The parameters are stored divided by ``gain`` (and multiplied back when used): Adam moves a
    parameter by about the learning rate per step whatever its gradient's scale, so this density
    adapts ``gain`` times faster than the transforms it prices. In short trainings the code's
    scale changes quickly, and a density that lags behind it overcharges every latent.
    """

    def __init__(self, channels: int, filters: Sequence[int] = (3, 3, 3), init_scale: float = 10.0,
                 gain: float = 10.0):
        super().__init__()
        self.channels, self.gain = channels, gain
        dims = (1, *filters, 1)
        scale = init_scale ** (1.0 / (len(dims) - 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for i in range(len(dims) - 1):
            init = math.log(math.expm1(1.0 / scale / dims[i + 1]))
            self.matrices.append(nn.Parameter(torch.full((channels, dims[i + 1], dims[i]), init / gain)))
            self.biases.append(nn.Parameter(torch.empty(channels, dims[i + 1], 1).uniform_(-0.5, 0.5) / gain))
            if i < len(dims) - 2:
                self.factors.append(nn.Parameter(torch.zeros(channels, dims[i + 1], 1)))

    def logits_cdf(self, x: Tensor, params: list[list[Tensor]] | None = None) -> Tensor:
        """(C, 1, L) points -> (C, 1, L) logits of the CDF at those points."""
        matrices, biases, factors = params or (list(self.matrices), list(self.biases), list(self.factors))
        g = self.gain
        for i, (m, b) in enumerate(zip(matrices, biases, strict=True)):
            x = torch.matmul(F.softplus(g * m), x) + g * b
            if i < len(factors):
                x = x + torch.tanh(g * factors[i]) * torch.tanh(x)
        return x

    def log_likelihood(self, y: Tensor) -> Tensor:
        """(N, C, h, w) values -> natural log of their unit-bin probability, same shape."""
        n, c = y.shape[:2]
        v = y.transpose(0, 1).reshape(c, 1, -1)
        ll = log_bin_mass_logistic(self.logits_cdf(v + 0.5), self.logits_cdf(v - 0.5))
        return ll.reshape(c, n, *y.shape[2:]).transpose(0, 1)

    @torch.no_grad()
    def tables(self, tail_mass: float = TAIL_MASS) -> ProbabilityTables:
        """One table per channel, in float64, over the range holding all but ``tail_mass``."""
        params = [[p.detach().double().cpu() for p in group]
                  for group in (self.matrices, self.biases, self.factors)]

        def cdf(points: Tensor) -> Tensor:  # (C, L) float64 -> (C, L)
            return torch.sigmoid(self.logits_cdf(points.unsqueeze(1), params).squeeze(1))

        bound = 64
        while True:  # widen the grid until every channel's tails fit (values beyond escape)
            grid = torch.arange(-bound, bound + 2, dtype=torch.float64) - 0.5
            edges = cdf(grid.expand(self.channels, -1))  # F(v - 1/2) for v = -bound .. bound + 1
            below = edges[:, 1:] < tail_mass  # F(v + 1/2) < tail: v lies in the lower tail
            above = edges[:, :-1] > 1.0 - tail_mass  # F(v - 1/2) > 1 - tail: v in the upper tail
            if bool(below[:, 0].all() and above[:, -1].all()) or bound >= MAX_TABLE_BOUND:
                break
            bound *= 4
        lo = below.sum(dim=1) - bound  # first value outside the lower tail
        hi = torch.maximum(bound - above.sum(dim=1), lo)  # last value outside the upper tail
        halves = [edges[ch, int(lo[ch]) + bound:int(hi[ch]) + bound + 2].numpy()
                  for ch in range(self.channels)]
        return from_cdf(lo.numpy().astype(np.int64), halves)


class EntropyModel(Regularizer):
    """Shared by the entropy models: quantization, bits per pixel, and the coding interface."""

    term = "rate"
    default_weight = 0.01
    registry_name = ""

    def __init__(self, code_shape: Sequence[int], *, weight: float = default_weight,
                 quantizer: Quantizer = "ste"):
        """``code_shape``: (M, h, w) of the model's spatial code, given by ``build_model``."""
        super().__init__(weight=weight)
        self.quantizer = quantizer
        m, h, w = (int(s) for s in code_shape)
        self.code_shape = (m, h, w)
        self._cache: dict[str, object] = {}  # coding tables, valid until the next training step

    def check(self, model: CodeModel, field: str) -> None:
        shape = model.notes.get("code_shape")
        if not shape:  # built for a stand-in code (see build_regularizer)
            raise ConfigError(f"{field}.name", self.registry_name,
                              "a model with a spatial code: model.name=codec, or conv with "
                              "model.code_dim=null")
        regs = list(model.regularizers)
        later = regs[regs.index(self) + 1:]
        if any(type(r).transform_code is not Regularizer.transform_code for r in later):
            raise ConfigError(f"{field}.name", self.registry_name,
                              "the last regularizer that transforms the code (it quantizes it)")

    def train(self, mode: bool = True) -> EntropyModel:
        self._cache: dict[str, object] = {}  # coding tables are recomputed after any training
        return super().train(mode)

    def spatial(self, z: Tensor) -> Tensor:
        """(N, D) flat code -> (N, M, h, w)."""
        return z.reshape(z.shape[0], *self.code_shape)

    # --- the regularizer hooks -----------------------------------------------------------------

    def transform_code(self, z: Tensor) -> Tensor:
        return self.transform_code_with_aux(z)[0]

    def transform_code_with_aux(self, z: Tensor) -> tuple[Tensor, Any]:
        """(N, D) -> (the code the decoder sees, the code before quantization, which the rate
        prices in training): rounded at inference, rounded straight-through or noisy in training."""
        if not self.training:
            return torch.round(z), z
        if self.quantizer == "noise":
            return z + torch.empty_like(z).uniform_(-0.5, 0.5), z
        return z + (torch.round(z) - z).detach(), z

    def penalty(self, ctx: LossContext) -> Tensor:
        x = ctx.x
        pixels = x.shape[0] * x.shape[-2] * x.shape[-1]
        # the likelihoods take differences of CDFs far in their tails: float32 even under bf16/fp16
        # autocast (bfloat16's 8-bit mantissa would misprice every latent, and CPU has no
        # bfloat16 log_ndtr); the entropy model's own layers are tiny, so this costs nothing
        with torch.autocast(x.device.type, enabled=False):
            return self.bits(ctx) / pixels

    def priced(self, ctx: LossContext) -> tuple[Tensor, Tensor]:
        """(what the rate prices, the code the decoder sees), (N, M, h, w) float32 each: in
        straight-through training the code before rounding plus uniform noise; with the noise
        quantizer the decoder's own noisy code; at inference the integers themselves."""
        q = self.spatial(ctx.z)
        y = ctx.aux_of(self) if self.training and self.quantizer == "ste" else None
        if y is None:
            return q.float(), q.float()
        y = self.spatial(y)
        return (y + torch.empty_like(y).uniform_(-0.5, 0.5)).float(), q.float()

    def bits(self, ctx: LossContext) -> Tensor:
        """Total bits of the batch, in float32."""
        raise NotImplementedError

    # --- the codec interface -------------------------------------------------------------------

    def encode_latents(self, y: Tensor, writer: SymbolWriter) -> tuple[Tensor, Tensor]:
        """Quantize ``y`` (1, M, h, w) and write its symbols; returns the integer symbols and the
        synthesis input (the same integers, or, for a model that predicts means, symbols + means),
        both (1, M, h, w) float tensors."""
        raise NotImplementedError

    def decode_latents(self, reader: SymbolReader) -> tuple[Tensor, Tensor]:
        """Read back one image of this model's size: (symbols, synthesis input), as encoded."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"weight={self.weight:g}, quantizer={self.quantizer!r}, code_shape={self.code_shape}"


def quantize_for_coding(y: Tensor) -> Tensor:
    """Integers of ``y`` as a float64 CPU tensor, clipped to +-``LATENT_LIMIT``."""
    return torch.round(y.detach().cpu().double()).clamp(-LATENT_LIMIT, LATENT_LIMIT)


@REGULARIZERS.register("factorized", "entropy model: rate of the rounded spatial code under one learned "
                       "density per channel (Ballé et al.); term 'rate' in bits per pixel")
class Factorized(EntropyModel):
    registry_name = "factorized"

    def __init__(self, code_shape: Sequence[int], *, weight: float = EntropyModel.default_weight,
                 quantizer: Quantizer = "ste", filters: list[int] | None = None):
        super().__init__(code_shape, weight=weight, quantizer=quantizer)
        self.filters = list(filters) if filters is not None else [3, 3, 3]
        check(all(f >= 1 for f in self.filters), "filters", self.filters, "a list of positive integers")
        self.density = FactorizedDensity(self.code_shape[0], self.filters)

    def bits(self, ctx: LossContext) -> Tensor:
        return -self.density.log_likelihood(self.priced(ctx)[0]).sum() / math.log(2.0)

    def _tables(self) -> ProbabilityTables:
        if "tables" not in self._cache:
            self._cache["tables"] = self.density.tables()
        return self._cache["tables"]  # type: ignore[return-value]

    def _channel_ids(self) -> np.ndarray:
        m, h, w = self.code_shape
        return np.broadcast_to(np.arange(m).reshape(m, 1, 1), (m, h, w))

    def encode_latents(self, y: Tensor, writer: SymbolWriter) -> tuple[Tensor, Tensor]:
        q = quantize_for_coding(y)
        writer.write(q[0].numpy().astype(np.int64), self._channel_ids(), self._tables())
        return q.float(), q.float()

    def decode_latents(self, reader: SymbolReader) -> tuple[Tensor, Tensor]:
        q = torch.from_numpy(reader.read(self._channel_ids(), self._tables())).float().unsqueeze(0)
        return q, q

    def extra_repr(self) -> str:
        return super().extra_repr() + f", filters={self.filters}"
