"""The variational piece of a VAE (Kingma & Welling 2014): a Gaussian code and its KL to N(0, I).

The encoder emits 2D numbers per image, read as the mean and log-variance of q(z|x). This
regularizer turns them into the D-dimensional code the decoder sees:

- training: a reparameterised sample ``z = mu + exp(logvar / 2) * eps``, eps ~ N(0, I), so the
  gradient flows through mu and logvar;
- inference: the mean ``mu`` (deterministic features, deterministic reconstructions);

and adds the penalty ``KL(q(z|x) || N(0, I))`` in nats, summed over the D units and averaged
over the batch (logged as ``kld``). It is not listed in the regularizer registry: a VAE
architecture (``models/vae.py``) builds it, because it only makes sense on an encoder that
outputs 2D numbers.
"""

from __future__ import annotations

import torch
from torch import Tensor

from aevision.regularizers.base import LossContext, Regularizer

# exp(logvar) must stay finite in float32 and float16; outside this range the posterior is
# degenerate anyway (std below 3e-7 or above 2e4)
LOGVAR_RANGE = (-30.0, 20.0)


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """Per-sample KL(N(mu, diag(exp(logvar))) || N(0, I)) in nats: (N, D), (N, D) -> (N,).

    The closed form 0.5 * sum_j (mu_j^2 + sigma_j^2 - 1 - log sigma_j^2).
    """
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1)


def split_posterior(h: Tensor) -> tuple[Tensor, Tensor]:
    """Encoder output (N, 2D) -> mean (N, D) and clamped log-variance (N, D)."""
    mu, logvar = h.chunk(2, dim=1)
    return mu, logvar.clamp(*LOGVAR_RANGE)


class GaussianLatent(Regularizer):
    """Reparameterisation (sample in training, mean at inference) plus the KL penalty.

    ``weight`` is set by the architecture to ``beta / (C * H * W)``: the reconstruction loss is a
    per-pixel mean, so the total ``recon + weight * kld`` equals the beta-VAE objective
    (summed reconstruction + beta * KL) divided by the number of pixels. With
    ``reconstruction: bce`` and ``beta = 1`` that is the negative ELBO of a Bernoulli decoder
    per pixel.
    """

    term = "kld"

    def __init__(self, beta: float, pixels: int):
        super().__init__(weight=beta / pixels)
        self.beta = beta

    def transform_code(self, h: Tensor) -> Tensor:
        return self.transform_code_with_aux(h)[0]

    def transform_code_with_aux(self, h: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """(N, 2D) -> the code (N, D) and the posterior (mu, logvar) its KL term needs."""
        mu, logvar = split_posterior(h)
        if not self.training:
            return mu, (mu, logvar)
        return mu + (0.5 * logvar).exp() * torch.randn_like(mu), (mu, logvar)

    def penalty(self, ctx: LossContext) -> Tensor:
        posterior = ctx.aux_of(self)
        if posterior is None:
            raise RuntimeError("GaussianLatent.penalty needs the posterior of the batch's encode (ctx.aux)")
        mu, logvar = posterior
        return gaussian_kl(mu.float(), logvar.float()).mean()

    def extra_repr(self) -> str:
        return f"beta={self.beta:g}, weight={self.weight:.3g}"
