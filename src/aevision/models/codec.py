"""``codec``: the analysis/synthesis transforms of learned image compression (Ballé et al.).

Encoder (analysis): ``stages`` convolutions of ``kernel_size`` x ``kernel_size`` with stride 2,
GDN between them; the last one outputs ``code_channels`` maps at 1/2^stages of the resolution.
Decoder (synthesis): the mirror image with transposed convolutions and inverse GDN, linear output.
The code stays spatial (``Parts.notes["code_shape"] = (M, h, w)``), flattened to (N, M*h*w) for
the features API; an entropy-model regularizer (``factorized``, ``hyperprior``) quantizes it and
prices it in bits, so ``loss = distortion + weight * rate`` is a config.

No weight depends on the image size (the flatten/unflatten at the ends only reshape), so a model
trained on 128x128 crops is rebuilt for any other size with the same weights
(:func:`aevision.models.resize.at_input_shape`); transposed convolutions get the output padding of
each stage's exact size, so odd sizes reconstruct exactly.
"""

from __future__ import annotations

from torch import Tensor, nn

from aevision.models.base import Parts
from aevision.models.conv import stage_sizes
from aevision.models.gdn import GDN
from aevision.models.registry import MODELS
from aevision.validation import check


class Affine(nn.Module):
    """x * scale + offset, fixed (no parameters)."""

    def __init__(self, scale: float = 1.0, offset: float = 0.0):
        super().__init__()
        self.scale, self.offset = scale, offset

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale + self.offset

    def extra_repr(self) -> str:
        return f"scale={self.scale:g}, offset={self.offset:g}"


@MODELS.register("codec", "learned-compression transforms: strided 5x5 convs with GDN, spatial code "
                 "(Ballé et al.); pair with --reg factorized or --reg hyperprior")
def codec(
    input_shape: tuple[int, int, int],
    *,
    channels: int = 64,
    code_channels: int = 96,
    stages: int = 4,
    kernel_size: int = 5,
    code_gain: float = 1.0,
) -> Parts:
    """``channels`` (N) inside the transforms, ``code_channels`` (M) in the code.

    ``code_gain`` multiplies the analysis output (and divides the synthesis input): a fresh
    transform's code is a fraction of the quantization step, so rounding erases it and the
    codec spends its first thousands of steps growing it; starting the code at a few steps of
    scale lets short trainings learn from the first step.
    """
    check(channels >= 1, "model.channels", channels, "an integer >= 1")
    check(code_channels >= 1, "model.code_channels", code_channels, "an integer >= 1")
    check(stages >= 1, "model.stages", stages, "an integer >= 1")
    check(kernel_size >= 3 and kernel_size % 2 == 1, "model.kernel_size", kernel_size,
          "an odd integer >= 3")
    check(code_gain > 0, "model.code_gain", code_gain, "a number > 0")
    c, height, width = input_shape
    k, pad = kernel_size, kernel_size // 2
    sizes = stage_sizes(height, width, stages)
    widths = [c] + [channels] * (stages - 1) + [code_channels]

    # the transforms work on zero-centred pixels: the synthesis need not learn the mean first,
    # which is most of what a fresh codec spends its first thousand steps on
    analysis: list[nn.Module] = [Affine(offset=-0.5)]
    for i in range(stages):
        analysis.append(nn.Conv2d(widths[i], widths[i + 1], k, 2, pad))
        if i < stages - 1:
            analysis.append(GDN(widths[i + 1]))
    code_shape = (code_channels, *sizes[-1])
    analysis += [Affine(scale=code_gain), nn.Flatten()]

    synthesis: list[nn.Module] = [nn.Unflatten(1, code_shape), Affine(scale=1.0 / code_gain)]
    for j in range(stages):
        (h0, w0), (h1, w1) = sizes[stages - j], sizes[stages - j - 1]
        # ConvTranspose2d(k, stride 2, padding k//2) gives 2s - 1 + output_padding
        synthesis.append(nn.ConvTranspose2d(widths[stages - j], widths[stages - j - 1], k, 2, pad,
                                            output_padding=(h1 - (2 * h0 - 1), w1 - (2 * w0 - 1))))
        if j < stages - 1:
            synthesis.append(GDN(widths[stages - j - 1], inverse=True))
    synthesis.append(Affine(offset=0.5))
    dim = code_shape[0] * code_shape[1] * code_shape[2]
    return Parts(nn.Sequential(*analysis), nn.Sequential(*synthesis), dim,
                 notes={"code_shape": code_shape, "stage_sizes": sizes})
