"""The regularizer interface: four hooks into the autoencoder's objective.

A regularizer may
- ``corrupt`` the training input (denoising),
- ``transform_code`` at every encode (top-k keeps k units, in training and at inference),
- ask for an ``input_tangent`` whose Jacobian-vector product the forward pass computes alongside
  the code (contractive), and
- add a ``penalty`` term to the loss, weighted by ``weight`` and logged under ``term``.
Defaults do nothing, so each regularizer overrides only what it needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor, nn

if TYPE_CHECKING:
    from aevision.models.base import Autoencoder, LossContext


class Regularizer(nn.Module):
    term: str = ""  # key of the penalty in the loss dict; "" when there is no penalty
    default_weight: float = 1.0
    min_frames: int = 1  # > 1: the penalty needs clips of at least this many ordered frames

    def __init__(self) -> None:
        super().__init__()
        self.weight = self.default_weight

    def corrupt(self, x: Tensor) -> Tensor:
        """Training-time input corruption; (N, C, H, W) -> same shape."""
        return x

    def transform_code(self, z: Tensor) -> Tensor:
        """Applied to the encoder output at every ``encode``; (N, D) -> (N, D)."""
        return z

    def input_tangent(self, x_in: Tensor) -> Tensor | None:
        """A direction u (shape of ``x_in``) to push through the encoder: ``ctx.jvp = J u``."""
        return None

    def penalty(self, ctx: LossContext) -> Tensor | None:
        """The unweighted penalty for this batch (a scalar), or None."""
        return None

    def check(self, model: Autoencoder, field: str) -> None:
        """Raise a :class:`ConfigError` naming ``field`` if ``model`` cannot take this regularizer."""

    def extra_repr(self) -> str:
        return f"weight={self.weight:g}" if self.term else ""
