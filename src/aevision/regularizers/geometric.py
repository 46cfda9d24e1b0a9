"""Geometric corruption: reconstruct the untransformed image from a shifted, rotated, zoomed one.

A denoising autoencoder (Vincent et al. 2008) whose corruption is a small random affine warp
instead of pixel noise. To reconstruct the original from the warped input the encoder has to
undo the warp, so its features come to describe *what* is drawn more than exactly *where*: the
invariance to small translations and rotations that classification wants, learned without labels.
It works where images have a canonical pose (centred digits, upright objects); the warp uses the
batched augmentation of :mod:`aevision.data.augment`.
"""

from __future__ import annotations

from torch import Tensor

from aevision.data.augment import Augment, AugmentConfig
from aevision.errors import ConfigError
from aevision.regularizers.base import Regularizer
from aevision.regularizers.registry import REGULARIZERS


@REGULARIZERS.register("geometric", "geometric denoising: reconstruct the original from a randomly "
                       "shifted / rotated / zoomed input")
class Geometric(Regularizer):
    def __init__(self, *, shift: float = 0.1, rotate: float = 10.0, scale: float = 0.0):
        super().__init__()
        cfg = AugmentConfig(shift=shift, rotate=rotate, scale=scale)
        try:
            cfg.validate("")
        except ConfigError as e:  # name the option as a regularizer option
            raise ConfigError(e.field.lstrip("."), e.value, e.expected) from None
        self.augment = Augment(cfg)
        self.shift, self.rotate, self.scale = shift, rotate, scale

    def corrupt(self, x: Tensor) -> Tensor:
        return self.augment.warp(x) if x.dim() == 4 else x

    def extra_repr(self) -> str:
        return f"shift={self.shift:g}, rotate={self.rotate:g}, scale={self.scale:g}"
