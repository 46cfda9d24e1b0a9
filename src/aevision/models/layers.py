"""Small building blocks shared by the architectures."""

from __future__ import annotations

from typing import Literal

from torch import nn

Activation = Literal["relu", "leaky_relu", "elu", "gelu", "silu", "tanh", "sigmoid", "linear"]

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "linear": nn.Identity,
}

CODE_RANGES: dict[str, tuple[float, float]] = {"sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0)}


def make_activation(name: str) -> nn.Module:
    return _ACTIVATIONS[name]()


def output_range(name: str) -> tuple[float, float] | None:
    return CODE_RANGES.get(name)
