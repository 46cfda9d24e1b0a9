"""Winner-take-all sparsity for convolutional codes (Makhzani & Frey 2015, "Winner-Take-All
Autoencoders").

With a spatial code (``conv`` with ``code_dim: null``: the last feature map is the code) each map
keeps only its largest activation per image (*spatial* sparsity), and during training each map
keeps that winner only in the ``lifetime`` fraction of the batch where it is strongest (*lifetime*
sparsity). The decoder must rebuild the image from a few located, strong responses, so every map
learns a distinct, shift-tolerant part detector; features for classification are the dense
(unsparsified) stage maps, max-pooled (``features: {source: stages, pool_op: max}``), as in the
paper.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from aevision.errors import ConfigError
from aevision.regularizers.base import CodeModel, Regularizer
from aevision.regularizers.registry import REGULARIZERS
from aevision.validation import check


@REGULARIZERS.register("wta", "winner-take-all: one active unit per feature map of a spatial conv "
                       "code, kept in the top `lifetime` fraction of the batch")
class WinnerTakeAll(Regularizer):
    def __init__(self, *, lifetime: float = 0.2):
        super().__init__()
        check(0.0 < lifetime <= 1.0, "lifetime", lifetime, "a fraction in (0, 1] (1: spatial sparsity only)")
        self.lifetime = lifetime
        self.shape: tuple[int, int, int] | None = None

    def check(self, model: CodeModel, field: str) -> None:
        channels, sizes = model.notes.get("channels"), model.notes.get("stage_sizes")
        if not channels or not sizes or model.code_dim != channels[-1] * sizes[-1][0] * sizes[-1][1]:
            raise ConfigError(f"{field}.name", "wta", "a model whose code is a feature map: "
                              "model.name=conv with model.code_dim=null")
        self.shape = (channels[-1], *sizes[-1])

    def transform_code(self, z: Tensor) -> Tensor:
        """(N, C*h*w) -> the same, all but each map's winner zeroed (and, in training, all but
        the top ``lifetime`` fraction of the batch's winners of each map)."""
        if self.shape is None:
            return z
        n, c = z.shape[0], self.shape[0]
        maps = z.reshape(n, c, -1)
        winners, where = maps.max(dim=2)  # (N, C)
        if self.training and self.lifetime < 1.0 and n > 1:
            k = max(1, math.ceil(self.lifetime * n))
            threshold = winners.topk(k, dim=0).values[-1:]  # (1, C): the k-th best of each map
            winners = winners * (winners >= threshold)
        sparse = torch.zeros_like(maps).scatter(2, where.unsqueeze(2), winners.unsqueeze(2))
        return sparse.reshape(n, -1)

    def extra_repr(self) -> str:
        return f"lifetime={self.lifetime:g}"
