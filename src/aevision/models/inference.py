"""Running a model for its outputs rather than training it: features and reconstructions of a set
of images in batches, in eval mode for the duration, then the mode the caller had (a model
mid-training stays in training mode)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from aevision.data import ImageSet, VideoSet, to_float
from aevision.data.imageset import float_batches
from aevision.errors import AevisionError
from aevision.models.base import Autoencoder
from aevision.regularizers.entropy import EntropyModel


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def as_float_images(images: Tensor | np.ndarray | ImageSet | VideoSet) -> Tensor:
    """uint8 or float images (tensor, array, ImageSet, or a VideoSet's frames) -> float32 in [0, 1]."""
    if isinstance(images, (ImageSet, VideoSet)):
        return to_float(images.images)
    t = torch.as_tensor(images)
    if t.dtype == torch.uint8:
        return to_float(t)
    return t.to(torch.float32)


@torch.no_grad()
def encode(model: Autoencoder, images: Tensor | np.ndarray | ImageSet | VideoSet, batch_size: int = 1024,
           device: str | torch.device | None = None) -> Tensor:
    """Features of ``images`` ((N, C, H, W), uint8 or float in [0, 1]; a VideoSet's frames in
    order): (N, D) float32 on CPU."""
    return _batched(model, model.encode, images, batch_size, device)


@torch.no_grad()
def reconstruct(model: Autoencoder, images: Tensor | np.ndarray | ImageSet | VideoSet,
                batch_size: int = 1024,
                device: str | torch.device | None = None) -> Tensor:
    """Reconstructions of ``images``: float32 on CPU."""
    return _batched(model, model.reconstruct, images, batch_size, device)


def _batched(model: Autoencoder, fn: Any, images: Any, batch_size: int, device: Any) -> Tensor:
    x_all = images.images if isinstance(images, (ImageSet, VideoSet)) else torch.as_tensor(images)
    model.check_input(x_all)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    with eval_mode(model):
        outs = [fn(x).float().cpu() for x in float_batches(x_all, batch_size, device)]
    return torch.cat(outs) if outs else torch.empty(0)


def entropy_model_input(model: Autoencoder, x: Tensor) -> Tensor:
    """The code y a codec's entropy model quantizes, (N, M, h, w): the encoder's output through the
    code transforms configured before the entropy model (what compression and export both code)."""
    z = model.encoder(x)
    for reg in model.regularizers:
        if isinstance(reg, EntropyModel):
            return reg.spatial(z)
        z = reg.transform_code(z)
    raise AevisionError("this model has no entropy model (a codec has one)")
