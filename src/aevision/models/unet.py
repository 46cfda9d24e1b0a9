"""``unet``: a convolutional autoencoder with U-Net skip connections, to pretrain a segmenter whole.

With few masks, a segmenter on a ``conv`` autoencoder's encoder still learns its U-Net decoder
(about half its weights) from those few masks alone. A U-Net trained to restore corrupted images
(Models Genesis, Zhou et al. 2019: a denoising autoencoder with skip connections) pretrains the
decoder too, and ``aevision segment`` then starts from both (:mod:`aevision.tasks.segmentation`).

Skip connections make copying the input easy, so train it with a corruption that has to be filled
in from context: ``denoising`` with ``noise: blocks`` (inpainting) or ``masking``.

The code is everything the decoder sees: the input (for the decoder's full-resolution stem) and
every encoder stage's map, flattened and concatenated. It is the U-Net's representation, not a
compact one: for probes, kNN or compact codes use ``conv``.

    x -> stages f_1 (H/2) ... f_L (H/2^L);  code = [x, f_1, ..., f_L] flattened
    code -> UNetDecoder(x, [f_1 .. f_L]) -> 1x1 conv -> output activation
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aevision.models.base import Parts
from aevision.models.conv import ConvEncoder, Downsample, encoder_stages, stage_sizes
from aevision.models.layers import Activation, make_activation
from aevision.models.registry import MODELS
from aevision.validation import check


def conv_bn_relu(c_in: int, c_out: int, bn: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, 1, 1, bias=not bn)]
    if bn:
        layers.append(nn.BatchNorm2d(c_out))
    layers.append(nn.ReLU(inplace=True))
    return layers


class UNetDecoder(nn.Module):
    """Skips (finest first, channels ``skips``) + the input -> (N, widths[0], H, W) features.

    It climbs back from the coarsest map: at each level it upsamples to the next finer skip's
    size, concatenates that skip, and applies two 3x3 convolutions; at full resolution it
    concatenates a small convolution of the input itself (``stem``: the strided encoder has no
    full-size map, and edges are sharpest there). Every upsampling goes to the skip's exact size,
    so sizes need not be powers of two.
    """

    def __init__(self, in_channels: int, skips: Sequence[int], widths: Sequence[int], stem: int,
                 batch_norm: bool):
        super().__init__()
        n = len(skips)
        self.stem = nn.Sequential(*conv_bn_relu(in_channels, stem, batch_norm)) if stem > 0 else None
        # blocks[i] produces level i (0 = full resolution) from level i + 1 and skip i
        blocks = []
        for i in range(n):
            below = skips[-1] if i == n - 1 else widths[i + 1]
            side = stem if i == 0 else skips[i - 1]
            blocks.append(nn.Sequential(*conv_bn_relu(below + side, widths[i], batch_norm),
                                        *conv_bn_relu(widths[i], widths[i], batch_norm)))
        self.blocks = nn.ModuleList(blocks)
        self.out_channels = int(widths[0])
        self.widths = [int(w) for w in widths]
        self.stem_channels = int(stem)
        self.batch_norm = bool(batch_norm)

    def forward(self, x: Tensor, feats: list[Tensor]) -> Tensor:
        h = feats[-1]
        for i in range(len(self.blocks) - 1, -1, -1):
            side = (self.stem(x) if self.stem is not None else None) if i == 0 else feats[i - 1]
            size = x.shape[2:] if i == 0 else side.shape[2:]  # type: ignore[union-attr]
            h = F.interpolate(h, size=size, mode="bilinear", align_corners=False)
            h = self.blocks[i](h if side is None else torch.cat([h, side], dim=1))
        return h


class UNetEncoder(ConvEncoder):
    """``conv``'s stages; the code is the input and every stage map, flattened."""

    def __init__(self, stages: nn.ModuleList):
        super().__init__(stages, nn.Identity())

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x.flatten(1), *(f.flatten(1) for f in self.forward_features(x))], dim=1)


class UNetReconstruction(nn.Module):
    """code -> (input, stage maps) -> :class:`UNetDecoder` -> 1x1 convolution -> output activation."""

    def __init__(self, shapes: Sequence[tuple[int, int, int]], unet: UNetDecoder, c_out: int,
                 output_activation: str):
        super().__init__()
        self.shapes = [tuple(s) for s in shapes]
        self.unet = unet
        self.out = nn.Sequential(nn.Conv2d(unet.out_channels, c_out, 1), make_activation(output_activation))

    def forward(self, z: Tensor) -> Tensor:
        sizes = [c * h * w for c, h, w in self.shapes]
        parts = z.split(sizes, dim=1)
        maps = [part.reshape(-1, *shape) for part, shape in zip(parts, self.shapes, strict=True)]
        return self.out(self.unet(maps[0], maps[1:]))


@MODELS.register("unet", "convolutional autoencoder with U-Net skip connections (pretrains a segmenter's "
                         "encoder and decoder)")
def unet(
    input_shape: tuple[int, int, int],
    *,
    channels: list[int] | None = None,
    kernel_size: int = 3,
    blocks_per_stage: int = 1,
    downsample: Downsample = "stride",
    batch_norm: bool = False,
    residual: bool = False,
    activation: Activation = "relu",
    decoder_channels: list[int] | None = None,
    stem_channels: int = 16,
    decoder_batch_norm: bool = True,
    output_activation: Activation = "sigmoid",
) -> Parts:
    """The encoder options are ``conv``'s; the decoder ones are ``aevision segment``'s ``decoder``
    section (``channels`` -> ``decoder_channels``, default: the encoder's widths), so that the
    segmenter can take the decoder over."""
    channels = list(channels) if channels is not None else [32, 64]
    c_in, height, width = input_shape
    stages = encoder_stages(c_in, channels, kernel_size, blocks_per_stage, downsample, batch_norm,
                            activation, activation, residual)  # checks the encoder options
    widths = list(decoder_channels) if decoder_channels is not None else list(channels)
    check(len(widths) == len(channels) and min(widths) >= 1, "model.decoder_channels", decoder_channels,
          f"one positive width per encoder stage ({len(channels)}), full resolution first")
    check(stem_channels >= 0, "model.stem_channels", stem_channels, "an integer >= 0")
    sizes = stage_sizes(height, width, len(channels))
    shapes = [(c_in, height, width), *((c, *hw) for c, hw in zip(channels, sizes[1:], strict=True))]
    climb = UNetDecoder(c_in, channels, widths, stem_channels, decoder_batch_norm)
    decoder = UNetReconstruction(shapes, climb, c_in, output_activation)
    return Parts(UNetEncoder(stages), decoder, sum(c * h * w for c, h, w in shapes),
                 notes={"stage_sizes": sizes, "channels": channels, "code_shape": None})
