"""Augmentation for few labels: new examples decoded from mixes of same-class codes.

With a hundred labelled images a classifier sees each class through ten examples. An autoencoder
trained on all the unlabelled images knows what lies between two images of the same class: the
decoded point ``decode(lam * z_a + (1 - lam) * z_b)`` on the segment between the codes of two
labelled examples of class c is a new, plausible image that should still be a c. Mixing only
within a class keeps the label honest; mixing across classes (mixup) would need soft labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from aevision.data.splits import generator
from aevision.errors import AevisionError
from aevision.models import Autoencoder
from aevision.models.inference import as_float_images, encode, eval_mode


@dataclass
class Mixed:
    """Synthetic examples: ``images`` (M, C, H, W) float in [0, 1], ``labels`` (M,), and where
    each came from (indices into the labelled set and the mixing weight of the first)."""

    images: Tensor
    labels: Tensor
    pairs: Tensor  # (M, 2) int64
    lam: Tensor  # (M,)


@torch.no_grad()
def latent_mixes(model: Autoencoder, images: Tensor, labels: Tensor, per_class: int, *,
                 seed: int = 0, low: float = 0.2, high: float = 0.8) -> Mixed:
    """``per_class`` decoded mixes for every class with at least two labelled images.

    ``lam`` is drawn uniformly in [low, high]: the ends (0 or 1) would only re-decode a labelled
    image. Pairs are drawn with distinct members, independently per synthetic example.
    """
    if per_class < 1:
        raise AevisionError(f"latent_mixes: per_class must be a positive integer, got {per_class}")
    if not 0.0 <= low <= high <= 1.0:
        raise AevisionError(f"latent_mixes: need 0 <= low <= high <= 1, got low={low}, high={high}")
    x = as_float_images(images)
    y = torch.as_tensor(labels).long()
    if len(x) != len(y):
        raise AevisionError(f"latent_mixes: {len(x)} images but {len(y)} labels")
    codes = encode(model, x)
    g = generator(seed, 53)
    pairs: list[Tensor] = []
    out_labels: list[Tensor] = []
    for c in torch.unique(y).tolist():
        idx = torch.nonzero(y == c).flatten()
        if len(idx) < 2:
            continue
        first = torch.randint(len(idx), (per_class,), generator=g)
        # a uniform draw among the others: shift by 1..n-1 (mod n) never lands on ``first``
        second = (first + torch.randint(1, len(idx), (per_class,), generator=g)) % len(idx)
        pairs.append(torch.stack([idx[first], idx[second]], dim=1))
        out_labels.append(torch.full((per_class,), c, dtype=torch.long))
    if not pairs:
        raise AevisionError("latent_mixes: no class has two labelled images to mix")
    pair = torch.cat(pairs)
    lam = low + (high - low) * torch.rand(len(pair), generator=g)
    z = lam[:, None] * codes[pair[:, 0]] + (1 - lam[:, None]) * codes[pair[:, 1]]
    device = next(model.parameters()).device
    with eval_mode(model):
        decoded = torch.cat([model.decode(chunk.to(device)).float().cpu() for chunk in z.split(1024)])
    if decoded.shape[1:] != x.shape[1:]:
        raise AevisionError(
            f"latent_mixes: the model reconstructs {tuple(decoded.shape[1:])}, not its input shape "
            f"{tuple(x.shape[1:])}; augmentation needs a model that decodes full images")
    return Mixed(decoded.clamp(0, 1), torch.cat(out_labels), pair, lam)
