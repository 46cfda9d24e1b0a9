"""What a model makes of images, written for a person or another program: what ``aevision encode``
and ``aevision reconstruct`` run.

:func:`write_features` saves every image's code (``.npy``: the features only; ``.safetensors``:
with labels, and source files and class names in the metadata); :func:`save_reconstructions`
draws inputs above their reconstructions.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch.nn.functional as F
from torch import Tensor

from aevision.data.imageset import ImageSet
from aevision.io import write_npy, write_safetensors
from aevision.models import Autoencoder
from aevision.models.inference import encode, reconstruct


def write_features(model: Autoencoder, data: ImageSet, out: str | os.PathLike[str], *,
                   batch_size: int = 512, device: str = "cpu", model_path: str | None = None) -> Tensor:
    """Encode ``data`` and write the (N, D) features to ``out`` (.npy or .safetensors)."""
    features = encode(model, data, batch_size, device)
    if Path(out).suffix.lower() == ".npy":
        write_npy(out, features.numpy())
        return features
    tensors = {"features": features}
    if data.labels is not None:
        tensors["labels"] = data.labels
    meta = {"model": str(model_path)}
    if data.files is not None:
        meta["files"] = json.dumps(data.files)
    if data.classes is not None:
        meta["classes"] = json.dumps(data.classes)
    write_safetensors(out, tensors, metadata=meta)
    return features


def save_reconstructions(model: Autoencoder, data: ImageSet, out: str | os.PathLike[str], *,
                         batch_size: int = 512, device: str = "cpu") -> None:
    """A PNG grid: ``data`` on top, the model's reconstructions below (a model that reconstructs
    another target, e.g. a smaller or single-channel one, is shown at the input's size)."""
    from aevision.report.plots import reconstruction_grid

    recon = reconstruct(model, data, batch_size, device)
    if recon.shape[1:] != data.images.shape[1:]:
        recon = F.interpolate(recon, size=data.images.shape[2:], mode="nearest")
        if recon.shape[1] != data.images.shape[1]:
            recon = recon.expand(-1, data.images.shape[1], -1, -1)
    reconstruction_grid(out, data.floats(), recon)
