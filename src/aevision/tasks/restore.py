"""Restoration with a denoising autoencoder: remove noise, fill holes.

A model trained with the ``denoising`` regularizer maps corrupted images to clean ones. Here it
runs on images of any size (fully convolutional models are rebuilt for the size, same weights),
and for inpainting the known pixels are kept: only the holes take the model's output.

:class:`Degradation` is the seeded corruption used to evaluate restorers, so that the
autoencoder and the classical methods (:mod:`aevision.tasks.classic_restore`) see exactly the
same noisy images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from aevision.config import parse_regularizer
from aevision.data.splits import generator
from aevision.errors import AevisionError
from aevision.models.base import Autoencoder
from aevision.models.resize import at_input_shape
from aevision.regularizers.denoising import Denoising, Noise, block_mask, corrupt
from aevision.validation import check, coerce

Task = Literal["denoise", "inpaint"]  # what restore_files does to each image
HOLE_NOISES = ("blocks", "masking")  # corruptions that remove pixels: what an inpainter learns to fill


@dataclass(frozen=True)
class Degradation:
    """A corruption of [0, 1] images: Gaussian ``sigma``, salt-and-pepper / masking fraction
    ``p``, or ``blocks`` of side ``block`` covering about ``p`` (inpainting holes)."""

    noise: Noise = "gaussian"
    sigma: float = 0.3
    p: float = 0.1
    block: int = 8

    def __post_init__(self) -> None:
        check(self.sigma >= 0, "sigma", self.sigma, "a standard deviation >= 0")
        check(0 <= self.p <= 1, "p", self.p, "a fraction in [0, 1]")
        check(self.block >= 1, "block", self.block, "an integer >= 1")

    @classmethod
    def parse(cls, spec: str) -> Degradation:
        """``gaussian:sigma=0.3``, ``salt_pepper:p=0.1``, ``blocks:p=0.25,block=8``."""
        d = parse_regularizer(spec)
        noise = coerce("--simulate", d.pop("name"), Noise)
        fields = {"sigma": float, "p": float, "block": int}
        for k in d:
            if k not in fields:
                raise AevisionError(f"--simulate {spec!r}: unknown option {k!r} (expected sigma, p or block)")
        return cls(noise, **{k: coerce(f"--simulate.{k}", v, fields[k]) for k, v in d.items()})

    @property
    def holes(self) -> bool:
        """Whether the corruption removes pixels (inpainting) rather than perturbing them."""
        return self.noise in HOLE_NOISES

    def label(self) -> str:
        if self.noise == "gaussian":
            return f"gaussian sigma={self.sigma:g}"
        return f"{self.noise} p={self.p:g}" + (f" block={self.block}" if self.noise == "blocks" else "")

    def apply(self, images: Tensor, seed: int = 0) -> tuple[Tensor, Tensor | None]:
        """(N, C, H, W) in [0, 1] -> (corrupted, hole mask (N, 1, H, W) or None); seeded."""
        g = generator(seed, 404)
        if self.noise == "blocks":
            mask = block_mask(tuple(images.shape), self.p, self.block, g)
            return images.masked_fill(mask, 0.0), mask
        if self.noise == "masking":
            mask = torch.rand((images.shape[0], 1, *images.shape[2:]), generator=g) < self.p
            return images.masked_fill(mask, 0.0), mask
        return corrupt(images, self.noise, self.sigma, self.p, generator=g), None

    def to_dict(self) -> dict[str, Any]:
        """The corruption and its own settings only (a Gaussian has no ``p``)."""
        used = {"gaussian": ("sigma",), "blocks": ("p", "block")}.get(self.noise, ("p",))
        return {"noise": self.noise, **{k: getattr(self, k) for k in used}}


@torch.no_grad()
def restore(model: Autoencoder, images: Tensor, holes: Tensor | None = None,
            batch_size: int = 64) -> Tensor:
    """Restored (N, C, H, W) images in [0, 1]; with ``holes`` (N, 1, H, W) bool, known pixels are
    kept and only the holes are filled."""
    if images.dim() != 4 or images.shape[1] != model.input_shape[0]:
        raise AevisionError(f"restore: expected (N, {model.input_shape[0]}, H, W) images, "
                            f"got {tuple(images.shape)}")
    sized = at_input_shape(model, images.shape[1:]).eval()
    device = next(model.parameters()).device
    outs = []
    for chunk in images.split(batch_size):
        outs.append(sized.reconstruct(chunk.float().to(device)).float().cpu().clamp(0, 1))
    out = torch.cat(outs)
    if out.shape != images.shape:
        raise AevisionError(f"restore: the model reconstructs {tuple(out.shape[1:])}, not the input's "
                            f"shape {tuple(images.shape[1:])}")
    if holes is not None:
        out = torch.where(holes.to(torch.bool), out, images.float())
    return out


def training_note(model: Autoencoder, task: Task) -> str | None:
    """A line saying when ``model`` was not trained for ``task`` (None when it was): without a
    ``denoising`` regularizer it only learned to copy its input, so it returns noise and holes
    about as they came; trained on noise it never learned to fill holes, and the reverse."""
    noises = {reg.noise for reg in model.regularizers if isinstance(reg, Denoising)}
    if not noises:
        return ("the model was not trained to restore (no denoising regularizer): it reconstructs its "
                "input, noise and holes included; pretrain with --reg denoising:noise=...")
    holes = bool(noises & set(HOLE_NOISES))
    if task == "inpaint" and not holes:
        return (f"the model was trained on {', '.join(sorted(noises))} noise, not on holes: "
                f"inpainting wants --reg denoising:noise=blocks or masking")
    if task == "denoise" and noises <= set(HOLE_NOISES):
        return (f"the model was trained to fill holes ({', '.join(sorted(noises))}), not to remove "
                f"noise: denoising wants --reg denoising:noise=gaussian or salt_pepper")
    return None
