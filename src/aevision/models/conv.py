"""``conv``: a convolutional autoencoder for any image size.

Each encoder stage halves the resolution, rounding up (strided conv, or conv + ceil-mode max-pool).
The decoder knows the exact size of every stage from build time and upsamples back to those sizes
(transposed convs with the matching ``output_padding``, or resize + conv), so the reconstruction
always has exactly the input's shape, odd sizes included. The stages are exposed
(:meth:`ConvEncoder.forward_features`) so segmentation can reuse them with skip connections.
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from aevision.models.base import Parts
from aevision.models.layers import Activation, make_activation, output_range
from aevision.models.registry import MODELS
from aevision.validation import check


class ConvEncoder(nn.Module):
    """``stages[i]``: (N, c_{i-1}, s_{i-1}) -> (N, c_i, s_i); ``head``: last map -> (N, D)."""

    def __init__(self, stages: nn.ModuleList, head: nn.Module):
        super().__init__()
        self.stages = stages
        self.head = head

    def forward_features(self, x: Tensor) -> list[Tensor]:
        """The output of every stage, finest first: the skip connections of a U-Net."""
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats

    def forward(self, x: Tensor) -> Tensor:
        for stage in self.stages:
            x = stage(x)
        return self.head(x)


class Resize(nn.Module):
    """Upsample to a fixed (H, W)."""

    def __init__(self, size: tuple[int, int], mode: str = "nearest"):
        super().__init__()
        self.size, self.mode = size, mode

    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate(x, size=self.size, mode=self.mode)

    def extra_repr(self) -> str:
        return f"size={self.size}, mode={self.mode!r}"


def conv_block(c_in: int, c_out: int, k: int, stride: int, bn: bool, act: str) -> list[nn.Module]:
    """conv (k x k, 'same' padding) [+ batch norm] [+ activation]."""
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, k, stride, k // 2, bias=not bn)]
    if bn:
        layers.append(nn.BatchNorm2d(c_out))
    if act != "linear":
        layers.append(make_activation(act))
    return layers


class ResidualBlock(nn.Module):
    """He et al.'s (2016) basic block: ``act(conv-bn-act-conv-bn(x) + shortcut(x))``, the shortcut
    the identity, or a strided 1 x 1 conv (+ bn) where width or resolution change.

    (N, c_in, H, W) -> (N, c_out, ceil(H / stride), ceil(W / stride)). The identity path lets
    gradients reach early layers of a deep stack unchanged, which is what lets a deep encoder
    fine-tune quickly.
    """

    def __init__(self, c_in: int, c_out: int, k: int, stride: int, bn: bool, act: str):
        super().__init__()
        self.body = nn.Sequential(*conv_block(c_in, c_out, k, stride, bn, act),
                                  *conv_block(c_out, c_out, k, 1, bn, "linear"))
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(*conv_block(c_in, c_out, 1, stride, bn, "linear"))
        self.act = make_activation(act)  # "linear": the identity

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.body(x) + self.shortcut(x))


def up_block(c_in: int, c_out: int, k: int, source: tuple[int, int], target: tuple[int, int],
             mode: str, bn: bool, act: str) -> list[nn.Module]:
    """Upsample (c_in, source) -> (c_out, target) exactly."""
    if mode == "resize":
        return [Resize(target), *conv_block(c_in, c_out, k, 1, bn, act)]
    # ConvTranspose2d(k, stride 2, padding k//2) gives 2s - 1 + output_padding for odd k
    pad = (target[0] - (2 * source[0] - 1), target[1] - (2 * source[1] - 1))
    layers: list[nn.Module] = [
        nn.ConvTranspose2d(c_in, c_out, k, 2, k // 2, output_padding=pad, bias=not bn)
    ]
    if bn:
        layers.append(nn.BatchNorm2d(c_out))
    if act != "linear":
        layers.append(make_activation(act))
    return layers


# how an encoder stage halves the resolution: a stride-2 first conv; a max-pool at the stage's end
# (the stage works at its input's resolution); or a max-pool after its first block, the rest of
# the stage at half resolution (Page's / airbench's CIFAR layout: conv, pool, conv; the same
# stage sizes at less than half the cost of "pool" for two blocks of a wide stage)
Downsample = Literal["stride", "pool", "pool_after_first"]


def encoder_stages(c_in: int, channels: list[int], k: int, blocks_per_stage: int, downsample: str,
                   bn: bool, activation: str, last_activation: str, residual: bool = False) -> nn.ModuleList:
    """One stage per width in ``channels``, each halving the resolution (rounding up) as
    :data:`Downsample` ``downsample`` says; the last block of the last stage ends with
    ``last_activation``. A block is one conv, or with ``residual`` a :class:`ResidualBlock` of
    two."""
    check(len(channels) >= 1 and all(c >= 1 for c in channels), "model.channels", channels,
          "a non-empty list of positive integers")
    check(k >= 1 and k % 2 == 1, "model.kernel_size", k, "an odd integer >= 1")
    check(blocks_per_stage >= 1, "model.blocks_per_stage", blocks_per_stage, "an integer >= 1")
    block = _residual_block if residual else conv_block
    stages = nn.ModuleList()
    prev = c_in
    for i, c in enumerate(channels):
        acts = [activation] * blocks_per_stage
        if i == len(channels) - 1:
            acts[-1] = last_activation
        first_stride = 2 if downsample == "stride" else 1
        layers = block(prev, c, k, first_stride, bn, acts[0])
        if downsample == "pool_after_first":
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
        for act in acts[1:]:
            layers += block(c, c, k, 1, bn, act)
        if downsample == "pool":
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
        stages.append(nn.Sequential(*layers))
        prev = c
    return stages


def _residual_block(c_in: int, c_out: int, k: int, stride: int, bn: bool, act: str) -> list[nn.Module]:
    return [ResidualBlock(c_in, c_out, k, stride, bn, act)]


def stage_sizes(height: int, width: int, stages: int) -> list[tuple[int, int]]:
    """[(H, W), ceil(H/2) x ceil(W/2), ...]: the map size after each stage."""
    sizes = [(height, width)]
    for _ in range(stages):
        h, w = sizes[-1]
        sizes.append(((h + 1) // 2, (w + 1) // 2))
    return sizes


@MODELS.register("conv", "convolutional encoder/decoder for any image size (exact-shape reconstruction)")
def conv(
    input_shape: tuple[int, int, int],
    *,
    channels: list[int] | None = None,
    kernel_size: int = 3,
    blocks_per_stage: int = 1,
    downsample: Downsample = "stride",
    upsample: Literal["transpose", "resize"] = "transpose",
    batch_norm: bool = False,
    residual: bool = False,
    code_dim: int | None = 128,
    activation: Activation = "relu",
    code_activation: Activation = "relu",
    output_activation: Activation = "sigmoid",
) -> Parts:
    """``code_dim=None`` keeps the last feature map as the code (flattened: C_L * h * w units).
    ``residual``: the encoder's blocks are residual (:class:`ResidualBlock`, two convs each), the
    decoder stays plain: it is discarded when the encoder is used."""
    channels = list(channels) if channels is not None else [32, 64]
    if code_dim is not None:
        check(code_dim >= 1, "model.code_dim", code_dim, "an integer >= 1 or null")
    c_in, height, width = input_shape
    k, bn, n = kernel_size, batch_norm, len(channels)
    sizes = stage_sizes(height, width, n)

    # with a spatial code, the last stage's activation is the code's
    stages = encoder_stages(c_in, channels, k, blocks_per_stage, downsample, bn, activation,
                            code_activation if code_dim is None else activation, residual)
    last_shape = (channels[-1], *sizes[-1])
    flat = last_shape[0] * last_shape[1] * last_shape[2]
    if code_dim is None:
        head: nn.Module = nn.Flatten()
        ups: list[nn.Module] = [nn.Unflatten(1, last_shape)]
        dim = flat
    else:
        head = nn.Sequential(nn.Flatten(), nn.Linear(flat, code_dim), make_activation(code_activation))
        ups = [nn.Linear(code_dim, flat), make_activation(activation), nn.Unflatten(1, last_shape)]
        dim = code_dim

    # decoder stage j undoes encoder stage n-1-j
    outs = [*reversed(channels[:-1]), c_in]
    for j, (ci, co) in enumerate(zip(reversed(channels), outs, strict=True)):
        last = j == n - 1
        for _ in range(blocks_per_stage - 1):
            ups += conv_block(ci, ci, k, 1, bn, activation)
        ups += up_block(ci, co, k, sizes[n - j], sizes[n - 1 - j], upsample, bn and not last,
                        output_activation if last else activation)
    return Parts(ConvEncoder(stages, head), nn.Sequential(*ups), dim,
                 code_range=output_range(code_activation),
                 notes={"stage_sizes": sizes, "channels": channels,
                        "code_shape": last_shape if code_dim is None else None})
