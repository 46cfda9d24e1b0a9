"""Contractive autoencoder (Rifai et al. 2011; 收缩自编码器): penalise ||dz/dx||_F^2.

The Frobenius norm of the encoder's Jacobian, per sample, averaged over the batch. Methods:

- ``closed_form``: exact and cheap for a one-layer sigmoid encoder h = s(Wx + b):
  ||J||_F^2 = sum_j (h_j (1 - h_j))^2 * sum_i W_ji^2.
- ``jvp``: unbiased estimate E_u ||J u||^2 with u Rademacher or Gaussian (E[u u^T] = I), one
  forward-mode tangent per projection; the first rides along the training forward pass.
- ``vjp``: the same estimate from the other side, E_v ||J^T v||^2, via double backward.
- ``exact``: the whole Jacobian, one batched backward per code unit (for checks and small codes).
- ``auto``: ``closed_form`` when the model allows it, else ``jvp``.

``samples`` < 1 estimates the batch mean from the first ``ceil(samples * N)`` samples of each
batch (batches are shuffled, so a random subset): still unbiased for the penalty and its gradient,
at that fraction of the cost. Deep encoders pay most of a Jacobian estimate in the tangent or
double-backward pass, so a quarter of the batch (the default) keeps a conv encoder's contractive
epoch near 1.35x an unregularised one, against 2.3x for the whole batch (``bench/throughput.py``).
The JVP then runs as its own pass on the subset instead of riding along the training forward pass.
Such extra encoder passes leave batch-norm running statistics alone: the training forward pass
already updated them once for this batch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch
from torch import Tensor, nn

from aevision.errors import ConfigError
from aevision.regularizers.base import CodeModel, LossContext, Regularizer, encode_with_tangent, widened
from aevision.regularizers.registry import REGULARIZERS
from aevision.validation import check

Method = Literal["auto", "closed_form", "jvp", "vjp", "exact"]


def random_direction(like: Tensor, distribution: str) -> Tensor:
    if distribution == "gaussian":
        return torch.randn_like(like)
    return torch.empty_like(like).bernoulli_(0.5).mul_(2).sub_(1)


@contextmanager
def running_stats_frozen(module: nn.Module) -> Iterator[None]:
    """Batch-norm layers normalise with batch statistics as usual but do not update their running
    statistics (momentum 0), so an extra pass over (part of) a batch does not count it twice."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None)
             for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, tracked) in zip(norms, saved, strict=True):
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)


def one_layer_sigmoid(model: CodeModel) -> nn.Linear | None:
    """The encoder's only Linear layer, if the encoder is exactly s(Wx + b) with no code transform."""
    linears = [m for m in model.encoder.modules() if isinstance(m, nn.Linear)]
    others = [m for m in model.encoder.modules()
              if len(list(m.children())) == 0 and not isinstance(m, (nn.Linear, nn.Flatten, nn.Sigmoid))]
    transforms = [r for r in model.regularizers
                  if type(r).transform_code is not Regularizer.transform_code]
    if len(linears) == 1 and not others and not transforms \
            and model.notes.get("code_activation") == "sigmoid":
        return linears[0]
    return None


def frobenius_closed_form(h: Tensor, weight: Tensor) -> Tensor:
    """Per-sample ||J||_F^2 of h = sigmoid(W x + b): (N, D) codes, (D, n_in) weight -> (N,)."""
    with torch.autocast(h.device.type, enabled=False):  # float32 under autocast: a sum over D
        h = widened(h)
        return (h * (1 - h)).pow(2) @ weight.to(h.dtype).pow(2).sum(dim=1)


def frobenius_exact(model: CodeModel, x: Tensor, create_graph: bool) -> Tensor:
    """Per-sample ||J||_F^2 from the full Jacobian: one batched backward per code unit. (N,)."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        z = model.encode(x)
        n, d = z.shape
        eye = torch.eye(d, device=z.device, dtype=z.dtype).unsqueeze(1).expand(d, n, d)
        (grads,) = torch.autograd.grad(z, x, eye, create_graph=create_graph, is_grads_batched=True)
    return widened(grads).pow(2).sum(dim=(0, *range(2, grads.dim())))


def squared_norms(v: Tensor) -> Tensor:
    """(N, ...) -> (N,) squared L2 norms, summed in float32: under bf16 autocast the tangents and
    gradients stay bfloat16 (the passes that make them are the cost, and a one-projection estimate
    is far noisier than bf16's 3 digits), only the sum of thousands of squares is widened."""
    return widened(v).pow(2).flatten(1).sum(dim=1)


@REGULARIZERS.register("contractive", "contractive: weight * ||dz/dx||_F^2 (closed form or stochastic JVP)")
class Contractive(Regularizer):
    term = "contractive"
    default_weight = 1e-3
    jacobian = True

    def __init__(self, *, weight: float = default_weight, method: Method = "auto", projections: int = 1,
                 distribution: Literal["rademacher", "gaussian"] = "rademacher", samples: float = 0.25):
        super().__init__(weight=weight)
        check(projections >= 1, "projections", projections, "an integer >= 1")
        check(0 < samples <= 1, "samples", samples, "a fraction of the batch in (0, 1]")
        self.method = method
        self.projections = projections
        self.samples = samples
        self.distribution = distribution
        self._linear: list[nn.Linear] = []  # not a submodule: it belongs to the encoder

    def check(self, model: CodeModel, field: str) -> None:
        linear = one_layer_sigmoid(model)
        if self.method == "closed_form" and linear is None:
            raise ConfigError(f"{field}.method", "closed_form",
                              "'jvp', 'vjp', 'exact' or 'auto' (the closed form needs a dense model "
                              "with no hidden layers, code_activation=sigmoid and no top-k)")
        # an encoder with softmax attention (mae): torch cannot backpropagate through the
        # forward-mode derivative of softmax, so its Jacobian estimate goes by double backward
        no_forward_ad = model.notes.get("forward_ad") is False
        if self.method == "jvp" and no_forward_ad:
            raise ConfigError(f"{field}.method", "jvp", "'vjp', 'exact' or 'auto' (this encoder's "
                              "softmax attention has no trainable forward-mode derivative in torch)")
        if self.method == "auto":
            self.method = "closed_form" if linear is not None else "vjp" if no_forward_ad else "jvp"
        self._linear = [linear] if linear is not None else []

    def input_tangent(self, x_in: Tensor) -> Tensor | None:
        if self.method == "jvp" and self.samples == 1:
            return random_direction(x_in, self.distribution)
        return None

    def subset(self, x: Tensor) -> Tensor:
        """The samples the stochastic estimate is computed on (all, or the first fraction)."""
        return x if self.samples == 1 else x[:max(1, math.ceil(self.samples * x.shape[0]))]

    def penalty(self, ctx: LossContext) -> Tensor:
        return self.per_sample(ctx).mean()

    def per_sample(self, ctx: LossContext) -> Tensor:
        """Estimated ||J||_F^2 for each sample of the batch (or of its first ``samples`` fraction)."""
        if self.method == "closed_form":
            return frobenius_closed_form(ctx.z, self._linear[0].weight)
        with running_stats_frozen(ctx.model.encoder):
            return self._estimate(ctx, self.subset(ctx.x_in))

    # autograd inside the forward (tangents, batched or plain grad): eager under torch.compile,
    # as encode_with_tangent says why
    @torch.compiler.disable
    def _estimate(self, ctx: LossContext, x_in: Tensor) -> Tensor:
        if self.method == "exact":
            return frobenius_exact(ctx.model, x_in, create_graph=self.training)
        if self.method == "jvp":
            riding = ctx.jvp is not None and self.samples == 1
            total = (squared_norms(ctx.jvp) if riding
                     else widened(x_in).new_zeros(x_in.shape[0]))
            for _ in range(self.projections - 1 if riding else self.projections):
                u = random_direction(x_in, self.distribution)
                _, _, jvp = encode_with_tangent(ctx.model.encode_with_aux, x_in, u)
                total = total + squared_norms(jvp)
            return total / self.projections
        # vjp: E_v ||J^T v||^2 with v in code space
        with torch.enable_grad():
            x = x_in.detach().requires_grad_(True)
            z = ctx.model.encode(x)
            total = widened(x).new_zeros(x.shape[0])
            for p in range(self.projections):
                v = random_direction(z, self.distribution)
                (g,) = torch.autograd.grad(z, x, v, create_graph=self.training,
                                           retain_graph=p < self.projections - 1 or self.training)
                total = total + squared_norms(g)
        return total / self.projections

    def extra_repr(self) -> str:
        return (f"weight={self.weight:g}, method={self.method!r}, projections={self.projections}, "
                f"samples={self.samples:g}")
