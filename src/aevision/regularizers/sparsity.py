"""Sparse codes: an L1 penalty, Ng's KL sparsity target, and hard top-k (k-sparse) codes."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from aevision.errors import ConfigError
from aevision.regularizers.base import CodeModel, LossContext, Regularizer, widened
from aevision.regularizers.registry import REGULARIZERS
from aevision.validation import check


@REGULARIZERS.register("l1", "L1 sparsity: weight * mean over the batch of ||z||_1")
class L1Sparsity(Regularizer):
    term = "l1"
    default_weight = 1e-4

    def __init__(self, *, weight: float = default_weight):
        super().__init__(weight=weight)

    def penalty(self, ctx: LossContext) -> Tensor:
        return widened(ctx.z).abs().sum(dim=1).mean()


@REGULARIZERS.register("kl", "KL sparsity (Ng): sum_j KL(rho || mean activation of unit j); sigmoid codes")
class KLSparsity(Regularizer):
    term = "kl"
    default_weight = 1e-2

    def __init__(self, *, weight: float = default_weight, rho: float = 0.05):
        super().__init__(weight=weight)
        check(0.0 < rho < 1.0, "rho", rho, "a target activation in (0, 1)")
        self.rho = rho

    def check(self, model: CodeModel, field: str) -> None:
        if model.code_range != (0.0, 1.0):
            raise ConfigError(f"{field}.name", "kl",
                              "a model whose code is in (0, 1): set model.code_activation=sigmoid")

    def penalty(self, ctx: LossContext) -> Tensor:
        eps = 1e-6
        rho_hat = ctx.z.float().mean(dim=0).clamp(eps, 1 - eps)
        rho = self.rho
        kl = rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))
        return kl.sum()

    def extra_repr(self) -> str:
        return f"weight={self.weight:g}, rho={self.rho:g}"


@REGULARIZERS.register("topk", "k-sparse code (Makhzani & Frey): keep the k largest units, zero the rest")
class TopKSparsity(Regularizer):
    """An L0 constraint: exactly ``k`` units pass; gradients flow only through them.

    ``eval_k`` (default ``k``) is the number kept at inference; the k-sparse paper keeps a few
    more (alpha * k) when encoding features for classification. ``over="channels"``, for a spatial
    code (N, C, h, w) flattened (``model.notes["code_shape"]``): the k largest of the C units at
    each position, so every patch of the image is coded by its k best-matching units (the
    ``patches`` architecture's dictionary of patch prototypes).
    """

    def __init__(self, *, k: int = 32, eval_k: int | None = None,
                 over: Literal["code", "channels"] = "code"):
        super().__init__()
        check(k >= 1, "k", k, "an integer >= 1")
        if eval_k is not None:
            check(eval_k >= 1, "eval_k", eval_k, "an integer >= 1 or null")
        check(over in ("code", "channels"), "over", over, "'code' or 'channels'")
        self.k = k
        self.eval_k = eval_k
        self.over = over
        self.shape: tuple[int, int, int] | None = None

    def check(self, model: CodeModel, field: str) -> None:
        size, what = model.code_dim, "the code size"
        if self.over == "channels":
            shape = model.notes.get("code_shape")
            if not shape:
                raise ConfigError(f"{field}.over", "channels", "'code': this model's code is not a "
                                  "feature map (model.notes has no code_shape)")
            self.shape = tuple(int(s) for s in shape)
            size, what = self.shape[0], "the code map's channels"
        for name, k in (("k", self.k), ("eval_k", self.eval_k)):
            if k is not None and k > size:
                raise ConfigError(f"{field}.{name}", k, f"at most {what} {size}")

    def transform_code(self, z: Tensor) -> Tensor:
        k = self.k if self.training or self.eval_k is None else self.eval_k
        if self.over == "channels" and self.shape is not None:
            maps = z.reshape(z.shape[0], self.shape[0], -1)  # (N, C, h*w)
            values, indices = maps.topk(k, dim=1)
            return torch.zeros_like(maps).scatter(1, indices, values).reshape(z.shape)
        values, indices = z.topk(k, dim=1)
        return torch.zeros_like(z).scatter(1, indices, values)

    def extra_repr(self) -> str:
        return f"k={self.k}, eval_k={self.eval_k}, over={self.over!r}"
