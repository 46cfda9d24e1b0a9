"""Regularizers: composable pieces of the training objective (sparsity, contractive, denoising,
temporal smoothness, entropy models)."""

from aevision.regularizers import contractive as _contractive  # noqa: F401  (registers)
from aevision.regularizers import denoising as _denoising  # noqa: F401
from aevision.regularizers import entropy as _entropy  # noqa: F401
from aevision.regularizers import geometric as _geometric  # noqa: F401
from aevision.regularizers import hyperprior as _hyperprior  # noqa: F401
from aevision.regularizers import smoothness as _smoothness  # noqa: F401
from aevision.regularizers import sparsity as _sparsity  # noqa: F401
from aevision.regularizers import wta as _wta  # noqa: F401
from aevision.regularizers.base import CodeModel, LossContext, Regularizer, encode_with_tangent
from aevision.regularizers.registry import REGULARIZERS, build_regularizer

__all__ = ["REGULARIZERS", "CodeModel", "LossContext", "Regularizer", "build_regularizer",
           "encode_with_tangent"]
