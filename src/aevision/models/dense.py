"""``dense``: the multilayer-perceptron autoencoder of the classic recipes.

Defaults reproduce the canonical example: 784 -> 256 -> 784, ReLU code, sigmoid output, MSE,
Adam. ``hidden`` adds layers between input and code; the decoder mirrors them unless
``decoder_hidden`` says otherwise (e.g. 784-784-128 / 128-128-784, a common sparse recipe).
"""

from __future__ import annotations

import itertools
import math

from torch import nn

from aevision.models.base import Parts
from aevision.models.layers import Activation, make_activation, output_range
from aevision.models.registry import MODELS
from aevision.validation import check


def mlp(sizes: list[int], act: str, last_act: str, batch_norm: bool, dropout: float) -> nn.Sequential:
    """Linear layers through ``sizes``; ``act`` between them, ``last_act`` after the last."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        last = i == len(sizes) - 2
        layers.append(nn.Linear(n_in, n_out))
        if not last:
            if batch_norm:
                layers.append(nn.BatchNorm1d(n_out))
            layers.append(make_activation(act))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        elif last_act != "linear":
            layers.append(make_activation(last_act))
    return nn.Sequential(*layers)


@MODELS.register("dense", "MLP encoder/decoder (default 784 -> 256 -> 784, ReLU code, sigmoid output)")
def dense(
    input_shape: tuple[int, int, int],
    *,
    hidden: list[int] | None = None,
    code_dim: int = 256,
    decoder_hidden: list[int] | None = None,
    activation: Activation = "relu",
    code_activation: Activation = "relu",
    output_activation: Activation = "sigmoid",
    batch_norm: bool = False,
    dropout: float = 0.0,
) -> Parts:
    hidden = list(hidden or [])
    dec_hidden = list(reversed(hidden)) if decoder_hidden is None else list(decoder_hidden)
    check(code_dim >= 1, "model.code_dim", code_dim, "an integer >= 1")
    check(all(h >= 1 for h in hidden), "model.hidden", hidden, "a list of positive integers")
    check(all(h >= 1 for h in dec_hidden), "model.decoder_hidden", decoder_hidden,
          "a list of positive integers")
    check(0.0 <= dropout < 1.0, "model.dropout", dropout, "a fraction in [0, 1)")
    n_in = math.prod(input_shape)
    encoder = nn.Sequential(
        nn.Flatten(), *mlp([n_in, *hidden, code_dim], activation, code_activation, batch_norm, dropout)
    )
    decoder = nn.Sequential(
        *mlp([code_dim, *dec_hidden, n_in], activation, output_activation, batch_norm, dropout),
        nn.Unflatten(1, tuple(input_shape)),
    )
    return Parts(encoder, decoder, code_dim, code_range=output_range(code_activation),
                 notes={"one_layer": not hidden, "code_activation": code_activation})
