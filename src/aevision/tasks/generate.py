"""Generation from the code space: random samples of a VAE and latent interpolations.

Sampling needs a prior to draw codes from, which only a variational model has (N(0, I), the
distribution its KL term pulled the codes towards); a plain autoencoder's codes fill an unknown
region, and decoding random points of R^D gives noise. Interpolation works with any autoencoder:
it decodes points on the path between the codes of two images.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from aevision.errors import AevisionError
from aevision.models import Autoencoder
from aevision.models.inference import as_float_images, eval_mode

Route = Literal["linear", "slerp"]


def is_variational(model: Autoencoder) -> bool:
    return bool(model.notes.get("variational"))


@torch.no_grad()
def sample(model: Autoencoder, n: int, *, seed: int = 0, temperature: float = 1.0) -> Tensor:
    """``n`` images decoded from codes drawn from the prior N(0, temperature^2 I): (n, C, H, W).

    ``temperature`` < 1 trades diversity for cleaner images (the usual truncation trick).
    """
    if not is_variational(model):
        name = model.spec.get("name", "this model")
        raise AevisionError(f"sample: model {name!r} has no prior to sample from; train a "
                            f"variational model (model.name=vae or conv-vae)")
    if n < 1:
        raise AevisionError(f"sample: n must be a positive integer, got {n}")
    if not 0 < temperature < math.inf:
        raise AevisionError(f"--temperature: got {temperature}, expected a finite number > 0")
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, model.code_dim, generator=g) * temperature
    return _decode(model, z.to(device))


def path_weights(steps: int) -> Tensor:
    """``steps`` evenly spaced fractions from 0 to 1, both ends included."""
    if steps < 2:
        raise AevisionError(f"interpolate: steps must be at least 2 (the two ends), got {steps}")
    return torch.linspace(0.0, 1.0, steps)


def lerp_codes(a: Tensor, b: Tensor, t: Tensor, path: Route = "linear") -> Tensor:
    """Codes on the path from ``a`` to ``b`` (each (D,)) at fractions ``t`` (T,): (T, D).

    ``slerp`` follows the great circle, keeping the norm of Gaussian codes typical (a straight line
    between two N(0, I) draws passes through low-norm, low-probability codes).
    """
    t = t.to(a.dtype).unsqueeze(1)
    if path == "linear":
        return (1 - t) * a + t * b
    cos = torch.dot(a, b) / (a.norm() * b.norm()).clamp_min(1e-12)
    omega = torch.arccos(cos.clamp(-1.0, 1.0))
    if float(omega) < 1e-4:  # (nearly) parallel: slerp degenerates to lerp
        return (1 - t) * a + t * b
    so = torch.sin(omega)
    return (torch.sin((1 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * b


@torch.no_grad()
def interpolate(model: Autoencoder, a: Tensor, b: Tensor, steps: int = 8,
                path: Route = "linear") -> Tensor:
    """Decoded images between images ``a`` and ``b`` ((C, H, W), uint8 or float): (steps, C, H, W).

    The first and last images are the reconstructions of ``a`` and ``b``.
    """
    t = path_weights(steps)
    x = as_float_images(torch.stack([torch.as_tensor(a), torch.as_tensor(b)]))
    model.check_input(x)
    device = next(model.parameters()).device
    with eval_mode(model):
        za, zb = model.encode(x.to(device)).float().cpu()
    return _decode(model, lerp_codes(za, zb, t, path).to(device))


def save_grid(path: str | os.PathLike[str], rows: Sequence[Tensor]) -> None:
    """A PNG of images in rows (float in [0, 1]), enlarged to about 64 pixels high."""
    from aevision.report.plots import image_grid, save_image

    save_image(path, image_grid(list(rows), scale=max(1, 64 // rows[0].shape[-2])))


def save_samples(model: Autoencoder, path: str | os.PathLike[str], n: int, nrow: int = 8, *,
                 seed: int = 0, temperature: float = 1.0) -> None:
    """A grid of ``n`` samples (see :func:`sample`), ``nrow`` per row."""
    save_grid(path, sample(model, n, seed=seed, temperature=temperature).split(nrow))


def save_interpolations(model: Autoencoder, images: Tensor, path: str | os.PathLike[str],
                        steps: int = 8, route: Route = "linear") -> int:
    """A grid whose rows interpolate between images taken in pairs (1st->2nd, 3rd->4th, ...);
    returns the number of rows."""
    if len(images) < 2 or len(images) % 2:
        raise AevisionError(f"interpolate: needs images in pairs, got {len(images)} image(s)")
    rows = [interpolate(model, images[i], images[i + 1], steps, route) for i in range(0, len(images), 2)]
    if rows[0].shape[1:] != images.shape[1:]:
        raise AevisionError("interpolate: this model decodes a different target than its input "
                            f"({tuple(rows[0].shape[1:])}), not images to show")
    save_grid(path, rows)
    return len(rows)


def _decode(model: Autoencoder, z: Tensor, batch_size: int = 1024) -> Tensor:
    with eval_mode(model):
        return torch.cat([model.decode(chunk).float().cpu() for chunk in z.split(batch_size)])
