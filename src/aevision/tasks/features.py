"""Which features of an encoder a classifier sees: the code, or pooled feature maps of its stages.

The code is what the autoencoder was trained to reconstruct from, and the default. Convolutional
encoders also expose the feature map of every stage (``encoder.forward_features``); a linear
classifier often does better on those maps, average-pooled to a small grid and concatenated across
stages (several scales, a few thousand numbers), than on a narrow code (Coates et al. 2011 make the
same point for single-layer networks). ``FeatureConfig(source="stages", pool=4)`` asks for that.
A ViT's stages are its blocks (``encoder.block_maps``: each block's patch tokens on the patch grid),
so the same config pools them by region instead of averaging every token into one vector.

:class:`FeatureEncoder` is an ``nn.Module`` so that fine-tuning trains exactly the features the
linear probe and kNN read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aevision.data.imageset import ImageSet, float_batches
from aevision.errors import ConfigError
from aevision.models.base import Autoencoder
from aevision.models.inference import eval_mode
from aevision.validation import check


@dataclass
class FeatureConfig:
    """``source="code"``: ``model.encode(x)``. ``source="stages"``: the maps of ``stages`` (indices
    into the encoder's stages, a ViT's blocks, negative from the end; null = all), each pooled to
    ``pool x pool`` (null: kept whole) by averaging or by maximum (``pool_op``), flattened and
    concatenated. ``pool`` with ``source="code"`` pools a spatial code (``notes["code_shape"]``:
    a conv's last map, a ``patches`` unit map) after its transforms: a k-sparse code is read as
    it was trained, not as the dense maps before its top-k."""

    source: Literal["code", "stages"] = "code"
    stages: list[int] | None = None
    pool: int | None = None
    pool_op: Literal["avg", "max"] = "avg"  # max: keeps the strongest response in each cell

    def validate(self, prefix: str = "features") -> None:
        if self.pool is not None:
            check(self.pool >= 1, f"{prefix}.pool", self.pool, "an integer >= 1 or null")
        if self.stages is not None:
            check(len(self.stages) >= 1, f"{prefix}.stages", self.stages,
                  "a non-empty list of stage indices or null")


class FeatureEncoder(nn.Module):
    """An autoencoder's encoder seen as a feature extractor: (N, C, H, W) -> (N, D)."""

    def __init__(self, model: Autoencoder, cfg: FeatureConfig | None = None, field: str = "features"):
        super().__init__()
        self.cfg = cfg or FeatureConfig()
        self.cfg.validate(field)
        self.encoder = model.encoder
        # code transforms (top-k) are part of the code; keep them, not the decoder
        self.regularizers = nn.ModuleList(model.regularizers)
        self.input_shape = model.input_shape
        self.code_shape: tuple[int, ...] | None = None
        if self.cfg.source == "code" and self.cfg.pool is not None:
            shape = model.notes.get("code_shape")
            if shape is None:
                raise ConfigError(f"{field}.pool", self.cfg.pool, "null with source 'code': this model's "
                                  "code is flat (pool a spatial code, or source 'stages')")
            self.code_shape = tuple(int(s) for s in shape)
        if self.cfg.source == "stages":
            found = stage_maps(self.encoder)
            if found is None:
                raise ConfigError(f"{field}.source", "stages", "'code': this encoder has no "
                                  "feature-map stages (convolutional encoders and ViTs do)")
            self.maps_method, n = found
            wanted = self.cfg.stages if self.cfg.stages is not None else list(range(n))
            for i, s in enumerate(wanted):
                check(-n <= s < n, f"{field}.stages[{i}]", s, f"a stage index in [{-n}, {n - 1}]")
            self.stage_ids = sorted({s % n for s in wanted})
        with torch.no_grad(), eval_mode(self):
            self.dim = int(self(torch.zeros(1, *self.input_shape)).shape[1])

    def forward(self, x: Tensor) -> Tensor:
        if self.cfg.source == "code":
            z = self.encoder(x)
            for reg in self.regularizers:
                z = reg.transform_code(z)
            return z if self.code_shape is None else self._pool(z.reshape(len(z), *self.code_shape))
        maps = getattr(self.encoder, self.maps_method)(x)
        return torch.cat([self._pool(maps[i]) for i in self.stage_ids], 1)

    def _pool(self, m: Tensor) -> Tensor:
        """(N, C, h, w) -> (N, C * pool * pool), or (N, C * h * w) without ``pool``."""
        if self.cfg.pool is not None:
            pool = F.adaptive_max_pool2d if self.cfg.pool_op == "max" else F.adaptive_avg_pool2d
            m = pool(m, self.cfg.pool)
        return m.flatten(1)


def stage_maps(encoder: nn.Module) -> tuple[str, int] | None:
    """The method that gives ``encoder``'s stage maps (a list of (N, C, h, w), first stage first)
    and how many it gives: a conv encoder's stages (``forward_features``), a ViT's blocks
    (``block_maps``); None for an encoder without either."""
    stages = getattr(encoder, "stages", None)
    if callable(getattr(encoder, "forward_features", None)) and stages is not None:
        return "forward_features", len(stages)
    if callable(getattr(encoder, "block_maps", None)):
        return "block_maps", len(encoder.blocks)
    return None


EXTRACT_BUDGET = 512 * 2**20  # bytes of the largest intermediate map of one extraction batch


@torch.no_grad()
def batch_for_memory(features: nn.Module, image_shape: tuple[int, ...], budget: int = EXTRACT_BUDGET,
                     most: int = 1024) -> int:
    """How many images of ``image_shape`` (C, H, W) ``features`` can take at once so that its largest
    layer output (float32, with its input alive beside it) stays near ``budget`` bytes: a wide map
    (the ``patches`` model: 1,600 channels at 27 x 27 a CIFAR image, 9 MB of it) takes batches of
    tens, a small conv the full ``most``. Measured by one forward pass of a blank image."""
    largest = [1]

    def record(_module: nn.Module, _inputs: object, output: object) -> None:
        if isinstance(output, Tensor):
            largest[0] = max(largest[0], output[:1].numel())

    leaves = [m for m in features.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(record) for m in leaves]
    device = next(features.parameters()).device
    try:
        with eval_mode(features):
            features(torch.zeros(1, *image_shape, device=device))
    finally:
        for h in hooks:
            h.remove()
    return max(1, min(most, budget // (2 * 4 * largest[0])))


@torch.no_grad()
def extract(features: nn.Module, images: ImageSet | Tensor, batch_size: int | None = None) -> Tensor:
    """``features`` of uint8 or [0, 1] images, in eval mode and batches: (N, D) float32, CPU.
    ``batch_size`` (default: as many as :func:`batch_for_memory` allows, at most 1,024). Each batch
    is written into one (N, D) tensor allocated at the first: no second copy at the end, and no
    small allocation kept between one batch's large temporaries and the next's."""
    x_all = images.images if isinstance(images, ImageSet) else images
    device = next(features.parameters()).device
    if batch_size is None:
        batch_size = batch_for_memory(features, tuple(x_all.shape[1:])) if len(x_all) else 1
    out: Tensor | None = None
    with eval_mode(features):
        for start, x in zip(range(0, len(x_all), batch_size), float_batches(x_all, batch_size, device),
                            strict=True):
            f = features(x)
            if out is None:
                out = torch.empty(len(x_all), *f.shape[1:])
            out[start:start + len(f)] = f
    return out if out is not None else torch.empty(0)
