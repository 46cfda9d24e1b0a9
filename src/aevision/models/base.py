"""The autoencoder every architecture and regularizer plugs into.

An :class:`Autoencoder` is an encoder and a decoder (the architecture, see ``models/``) plus a
list of regularizers (``regularizers/``). ``forward`` is the training objective, split as in the
papers: corrupt the input (denoising), encode, decode, reconstruction loss, then each
regularizer's penalty. It returns the named terms and their weighted sum ``loss``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aevision.errors import AevisionError
from aevision.regularizers.base import LossContext, Regularizer, encode_with_tangent

Reconstruction = Literal["mse", "bce", "l1"]


@dataclass
class Parts:
    """What an architecture builder returns.

    ``encoder``: (N, C, H, W) -> (N, D); ``decoder``: (N, D) -> reconstruction.
    ``target`` maps the input to what the decoder must reproduce (identity when None; the deep
    spatial autoencoder reconstructs a downsampled grey image). ``code_range`` is the interval the
    code lives in ((0, 1) for sigmoid codes), which some regularizers require. ``regularizers``
    are the ones the architecture itself implies (a VAE's reparameterisation and KL term); they
    run before the configured ones and are rebuilt by the builder, so configs never list them.
    ``autoencoder`` is the :class:`Autoencoder` subclass ``build_model`` makes of the parts when
    the architecture's objective differs (``mae``: it overrides :meth:`Autoencoder.objective`).
    """

    encoder: nn.Module
    decoder: nn.Module
    code_dim: int
    target: nn.Module | None = None
    code_range: tuple[float, float] | None = None
    notes: dict[str, Any] = field(default_factory=dict)
    regularizers: list[Regularizer] = field(default_factory=list)
    # the Autoencoder subclass to build when the training objective is not "decode(encode(x))
    # vs the target" (the masked autoencoder's); None: Autoencoder itself
    autoencoder: type[Autoencoder] | None = None


class Autoencoder(nn.Module):
    """encoder + decoder + composable regularizers; ``encode(x)`` gives the features."""

    def __init__(
        self,
        parts: Parts,
        input_shape: Sequence[int],
        regularizers: Sequence[Regularizer] = (),
        reconstruction: Reconstruction = "mse",
        spec: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.encoder = parts.encoder
        self.decoder = parts.decoder
        self.target = parts.target
        self.code_dim = parts.code_dim
        self.code_range = parts.code_range
        self.notes = parts.notes  # architecture facts regularizers may rely on
        self.input_shape = tuple(int(s) for s in input_shape)
        self.regularizers = nn.ModuleList([*parts.regularizers, *regularizers])
        self.reconstruction = reconstruction
        self.spec = spec or {}  # how to rebuild this model: written to config.json

    # --- the features API ----------------------------------------------------------------------

    def encode(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, D) code, after code transforms such as top-k."""
        return self.encode_with_aux(x)[0]

    def encode_with_aux(self, x: Tensor) -> tuple[Tensor, tuple[Any, ...]]:
        """The code and, per regularizer, what its penalty needs of this encode besides the code
        (``transform_code_with_aux``: the code before rounding, a posterior; None for most)."""
        z = self.encoder(x)
        aux = []
        for reg in self.regularizers:
            z, a = reg.transform_code_with_aux(z)
            aux.append(a)
        return z, tuple(aux)

    def decode(self, z: Tensor) -> Tensor:
        """(N, D) -> reconstruction (the input's shape, or the target's)."""
        return self.decoder(z)

    def reconstruct(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))

    @property
    def reconstructs(self) -> str:
        """What :meth:`reconstruct` gives: ``"images"`` (the input, or an image target such as the
        DSAE's small grey one), or what else (``patches``: ``"whitened patches"``, one vector per
        position, nothing to draw beside the input). Architectures say so in ``Parts.notes``."""
        return str(self.notes.get("reconstructs", "images"))

    def check_input(self, x: Tensor) -> None:
        """One-line error when ``x`` is not a batch of images this model was built for."""
        shape = tuple(x.shape[-3:])
        if x.dim() not in (4, 5) or shape != self.input_shape:
            exp = "x".join(map(str, self.input_shape))
            got = "x".join(map(str, shape)) if x.dim() >= 3 else str(tuple(x.shape))
            raise AevisionError(
                f"model expects images of shape {exp} (channels x height x width), got {got}"
            )

    # --- the training objective ----------------------------------------------------------------

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Loss terms for a batch: ``x`` (N, C, H, W), or (B, T, C, H, W) clips of T frames.

        Returns ``{"loss": weighted sum, "recon": ..., <one entry per penalty>}`` (unweighted
        terms; the weights are in the config).
        """
        frames = None
        if x.dim() == 5:
            frames = int(x.shape[1])
            x = x.flatten(0, 1)
        x_in = x
        if self.training:
            for reg in self.regularizers:
                x_in = reg.corrupt(x_in)
        tangent = None
        for reg in self.regularizers:
            tangent = reg.input_tangent(x_in)
            if tangent is not None:
                break
        ctx, recon = self.objective(x, x_in, tangent, frames)
        terms: dict[str, Tensor] = {"loss": recon, "recon": recon}
        loss = recon
        for reg in self.regularizers:
            penalty = reg.penalty(ctx)
            if penalty is not None:
                terms[reg.term] = penalty
                loss = loss + reg.weight * penalty
        terms["loss"] = loss
        return terms

    def objective(self, x: Tensor, x_in: Tensor, tangent: Tensor | None,
                  frames: int | None) -> tuple[LossContext, Tensor]:
        """The reconstruction term of a batch and the context its penalties read: encode the
        (corrupted) ``x_in``, with J(x_in) @ ``tangent`` when a regularizer asked for it, decode,
        compare with the target of the clean ``x``. (The masked autoencoder overrides this.)"""
        target = x if self.target is None else self.target(x)
        if tangent is None:
            z, aux = self.encode_with_aux(x_in)
            jvp = None
        else:
            # one pass gives the code and J(x_in) @ tangent (forward-mode AD), so a Jacobian
            # penalty costs a tangent propagation instead of a second encoder pass
            z, aux, jvp = encode_with_tangent(self.encode_with_aux, x_in, tangent)
        x_hat = self.decode(z)
        recon = self.reconstruction_loss(x_hat, target)
        return LossContext(self, x, x_in, z, x_hat, target, frames, tangent, jvp, aux), recon

    def reconstruction_loss(self, x_hat: Tensor, target: Tensor) -> Tensor:
        if self.reconstruction == "mse":
            return F.mse_loss(x_hat, target)
        if self.reconstruction == "bce":
            with torch.autocast(device_type=x_hat.device.type, enabled=False):
                return F.binary_cross_entropy(x_hat.float().clamp(0, 1), target.float())
        return F.l1_loss(x_hat, target)

    def extra_repr(self) -> str:
        return f"input_shape={self.input_shape}, code_dim={self.code_dim}, loss={self.reconstruction}"
