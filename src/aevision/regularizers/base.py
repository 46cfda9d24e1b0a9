"""The regularizer contract: hooks into the autoencoder's objective, and what they are given.

A regularizer may
- ``corrupt`` the training input (denoising),
- ``transform_code`` at every encode (top-k keeps k units, in training and at inference); one
  whose penalty needs more of the encode than the code (what it was before rounding, a posterior)
  returns that too, from ``transform_code_with_aux``, and finds it in the loss context: nothing
  is kept on the regularizer between the encode and the penalty,
- ask for an ``input_tangent`` whose Jacobian-vector product the forward pass computes alongside
  the code (contractive), and
- add a ``penalty`` term to the loss, weighted by ``weight`` and logged under ``term``.
Defaults do nothing, so each regularizer overrides only what it needs.

The models import this contract and never the other way round: a regularizer sees the model it
is part of through :class:`CodeModel`, the few things it may read of it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import torch
import torch.autograd.forward_ad as fwAD
from torch import Tensor, nn

from aevision.validation import check

# torch's forward-mode AD loads its decompositions through torch.jit.script on first use, which
# warns about the deprecation of jit on every run: torch's own business, not the user's.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)


A = TypeVar("A")


class CodeModel(Protocol):
    """What a regularizer may read of its autoencoder (:class:`aevision.models.Autoencoder` is one)."""

    encoder: nn.Module
    regularizers: Sequence[Regularizer]  # the architecture's own first, then the configured ones
    notes: dict[str, Any]  # architecture facts: code_activation, code_shape, channels, ...
    code_dim: int
    code_range: tuple[float, float] | None

    def encode(self, x: Tensor) -> Tensor: ...

    def encode_with_aux(self, x: Tensor) -> tuple[Tensor, tuple[Any, ...]]: ...


@dataclass
class LossContext:
    """Everything a regularizer may need to compute its penalty for one batch.

    ``x``: (N, C, H, W) clean input; ``x_in``: the input after corruption; ``z``: (N, D) code;
    ``x_hat``: reconstruction; ``frames``: T when the batch was N/T clips of T ordered frames;
    ``tangent``/``jvp``: an input direction u and J(x_in) u, when a regularizer asked for one;
    ``aux``: what each of ``model.regularizers`` returned beside the code in the encode (see
    :meth:`aux_of`).
    """

    model: CodeModel
    x: Tensor
    x_in: Tensor
    z: Tensor
    x_hat: Tensor
    target: Tensor
    frames: int | None = None
    tangent: Tensor | None = None
    jvp: Tensor | None = None
    aux: Sequence[Any] = ()

    def aux_of(self, reg: Regularizer) -> Any:
        """What ``reg.transform_code_with_aux`` returned beside the code in this batch's encode
        (None when nothing, or when the context was made without an encode)."""
        if not self.aux:
            return None
        for r, aux in zip(self.model.regularizers, self.aux, strict=True):
            if r is reg:
                return aux
        return None


@torch.compiler.disable
def encode_with_tangent(encode: Callable[[Tensor], tuple[Tensor, A]], x: Tensor,
                        tangent: Tensor) -> tuple[Tensor, A, Tensor]:
    """``encode(x)``, a code and its aux (``CodeModel.encode_with_aux``), and the code's
    Jacobian-vector product J(x) @ tangent, by forward-mode AD.

    Always eager, also inside a ``torch.compile``d model (the rest of the model still compiles):
    Inductor does not carry forward-mode tangents (pytorch/pytorch#187284: the tangent is silently
    dropped; with torch 2.11, CUDA and bf16 the backward fails with "ZeroTensors are immutable").
    """
    with fwAD.dual_level(), norm_tangents_in_primal_dtype(x.device.type):
        z, aux = encode(fwAD.make_dual(x, tangent))
        z, jvp = fwAD.unpack_dual(z)
    return z, aux, jvp


def widened(t: Tensor) -> Tensor:
    """``t`` in float32 if it is a 16-bit float (a bf16 autocast activation), else as it is: a
    penalty sums thousands of terms, which bf16's 8-bit mantissa would round to 3 digits."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


@contextmanager
def norm_tangents_in_primal_dtype(device_type: str) -> Iterator[None]:
    """Under autocast, give each normalisation layer's output tangent its output's dtype.

    A batch norm fed bfloat16 under autocast keeps its float32 weights; its forward-mode derivative
    then returns a float32 tangent on a bfloat16 output, and the next convolution refuses the pair
    ("Input type (torch.FloatTensor) and weight type (CPUBFloat16Type) should be the same"; the
    same mixed-dtype norm rule as pytorch/pytorch#184890). Outside autocast: nothing to do.
    """
    if not torch.is_autocast_enabled(device_type):
        yield
        return
    handle = nn.modules.module.register_module_forward_hook(_tangent_like_primal)
    try:
        yield
    finally:
        handle.remove()


def _tangent_like_primal(module: nn.Module, args: Any, out: Any) -> Tensor | None:
    if not isinstance(module, NORMS) or not isinstance(out, Tensor):
        return None
    primal, tangent = fwAD.unpack_dual(out)
    if tangent is None or tangent.dtype == primal.dtype:
        return None
    return fwAD.make_dual(primal, tangent.to(primal.dtype))


class Regularizer(nn.Module):
    """A regularizer with a penalty takes ``weight`` as a keyword-only constructor option, like its
    other options (``def __init__(self, *, weight: float = default_weight, ...)``), and passes it
    on here, where it is checked."""

    term: str = ""  # key of the penalty in the loss dict; "" when there is no penalty
    default_weight: float = 1.0
    min_frames: int = 1  # > 1: the penalty needs clips of at least this many ordered frames
    # True: the penalty differentiates the code with respect to the input (forward-mode AD or a
    # double backward), which fused attention kernels do not support (mae then computes
    # attention by its formula)
    jacobian: bool = False

    def __init__(self, *, weight: float | None = None) -> None:
        super().__init__()
        weight = self.default_weight if weight is None else weight
        check(weight >= 0, "weight", weight, "a number >= 0")
        self.weight = float(weight)

    def corrupt(self, x: Tensor) -> Tensor:
        """Training-time input corruption; (N, C, H, W) -> same shape."""
        return x

    def transform_code(self, z: Tensor) -> Tensor:
        """Applied to the encoder output at every ``encode``; (N, D) -> (N, D)."""
        return z

    @property
    def transforms_code(self) -> bool:
        """Whether this regularizer changes the code at every encode (then it is part of what an
        encoder computes, trained or not; a penalty or a corruption is not)."""
        cls = type(self)
        return (cls.transform_code is not Regularizer.transform_code
                or cls.transform_code_with_aux is not Regularizer.transform_code_with_aux)

    def transform_code_with_aux(self, z: Tensor) -> tuple[Tensor, Any]:
        """``transform_code(z)`` and what ``penalty`` needs of this encode besides the code (None:
        nothing); the forward pass hands it over as ``ctx.aux_of(self)``."""
        return self.transform_code(z), None

    def input_tangent(self, x_in: Tensor) -> Tensor | None:
        """A direction u (shape of ``x_in``) to push through the encoder: ``ctx.jvp = J u``."""
        return None

    def penalty(self, ctx: LossContext) -> Tensor | None:
        """The unweighted penalty for this batch (a scalar), or None."""
        return None

    def check(self, model: CodeModel, field: str) -> None:
        """Raise a :class:`ConfigError` naming ``field`` if ``model`` cannot take this regularizer."""

    def extra_repr(self) -> str:
        return f"weight={self.weight:g}" if self.term else ""
