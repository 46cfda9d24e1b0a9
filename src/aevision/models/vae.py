"""``vae`` and ``conv-vae``: variational autoencoders built from the dense and conv architectures.

A VAE is not a new network, it is a different reading of the code: the encoder emits a mean and a
log-variance per latent unit, training decodes a sample from that Gaussian, and a KL term pulls
the posterior towards N(0, I) so that decoding samples of N(0, I) gives plausible images. So each
builder here calls its base builder twice, once for an encoder with 2 * ``code_dim`` linear
outputs and once for a decoder from ``code_dim`` units, and attaches
:class:`~aevision.regularizers.gaussian.GaussianLatent` (reparameterisation + KL) as the
architecture's own regularizer. ``encode`` returns the posterior mean: the features.

``beta`` scales the KL term (beta-VAE, Higgins et al. 2017). With ``model.reconstruction: bce``
and ``beta: 1`` the loss is the negative ELBO of a Bernoulli decoder; with ``mse``, ``beta`` plays
the role of twice the decoder variance, so values well below 1 (e.g. 0.01) suit MSE.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

from aevision.models.base import Parts
from aevision.models.conv import Downsample, conv
from aevision.models.dense import dense
from aevision.models.layers import Activation
from aevision.models.registry import MODELS
from aevision.regularizers.gaussian import GaussianLatent
from aevision.validation import check


def variational(build: Callable[[int], Parts], code_dim: int, beta: float,
                input_shape: tuple[int, int, int]) -> Parts:
    """A VAE's parts from ``build(width)``, a base builder with a linear code of ``width`` units."""
    check(code_dim >= 1, "model.code_dim", code_dim, "an integer >= 1")
    check(beta >= 0 and math.isfinite(beta), "model.beta", beta, "a number >= 0")
    enc = build(2 * code_dim)  # (N, C, H, W) -> (N, 2D): mean and log-variance
    dec = build(code_dim)  # (N, D) -> reconstruction
    return Parts(
        enc.encoder, dec.decoder, code_dim, target=enc.target, code_range=None,
        notes={**enc.notes, "code_activation": "linear", "variational": True, "beta": beta},
        regularizers=[GaussianLatent(beta, math.prod(input_shape))],
    )


@MODELS.register("vae", "variational autoencoder, MLP (default 784 -> 512 -> 2x16 Gaussian code); "
                 "beta-VAE via beta")
def vae(
    input_shape: tuple[int, int, int],
    *,
    hidden: list[int] | None = None,
    code_dim: int = 16,
    beta: float = 1.0,
    activation: Activation = "relu",
    output_activation: Activation = "sigmoid",
    batch_norm: bool = False,
    dropout: float = 0.0,
) -> Parts:
    """``hidden`` defaults to [512]; an empty list gives a linear Gaussian encoder."""
    hidden = [512] if hidden is None else list(hidden)
    return variational(
        lambda width: dense(input_shape, hidden=hidden, code_dim=width, activation=activation,
                            code_activation="linear", output_activation=output_activation,
                            batch_norm=batch_norm, dropout=dropout),
        code_dim, beta, input_shape)


@MODELS.register("conv-vae", "variational autoencoder, convolutional (any image size); beta-VAE via beta")
def conv_vae(
    input_shape: tuple[int, int, int],
    *,
    channels: list[int] | None = None,
    code_dim: int = 16,
    beta: float = 1.0,
    kernel_size: int = 3,
    blocks_per_stage: int = 1,
    downsample: Downsample = "stride",
    upsample: Literal["transpose", "resize"] = "transpose",
    batch_norm: bool = False,
    activation: Activation = "relu",
    output_activation: Activation = "sigmoid",
) -> Parts:
    return variational(
        lambda width: conv(input_shape, channels=channels, kernel_size=kernel_size,
                           blocks_per_stage=blocks_per_stage, downsample=downsample,
                           upsample=upsample, batch_norm=batch_norm, code_dim=width,
                           activation=activation, code_activation="linear",
                           output_activation=output_activation),
        code_dim, beta, input_shape)
