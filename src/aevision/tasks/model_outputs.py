"""What a model makes of images, written for a person or another program: what ``aevision encode``
and ``aevision reconstruct`` run.

:func:`write_features` saves every image's code with what each row is: its source file or its
index in the dataset, label, class names, the files skipped and what was resized (``.npy``: in
``<name>.rows.json`` beside it; ``.safetensors``: labels and indices as tensors, the rest in the
metadata); :func:`save_reconstructions` draws inputs above their reconstructions.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import Tensor

from aevision.data.imageset import ImageSet
from aevision.data.inputs import Inputs
from aevision.errors import AevisionError
from aevision.io import write_json, write_npy, write_safetensors
from aevision.models import Autoencoder
from aevision.models.inference import encode, reconstruct


def write_features(model: Autoencoder, inputs: Inputs, out: str | os.PathLike[str], *,
                   batch_size: int = 512, device: str = "cpu", model_path: str | None = None) -> Tensor:
    """Encode ``inputs`` and write the (N, D) features to ``out`` (.npy, with
    :func:`rows_path` beside it, or .safetensors), saying which image each row is."""
    features = encode(model, inputs.data, batch_size, device)
    record = {"model": str(model_path), **inputs.record()}
    if Path(out).suffix.lower() == ".npy":
        write_npy(out, features.numpy())
        write_json(rows_path(out), {"features": Path(out).name, **record})
        return features
    tensors = {"features": features}
    for key in ("labels", "indices"):
        if record[key] is not None:
            tensors[key] = torch.tensor(record.pop(key), dtype=torch.long)
    meta = {"model": record.pop("model")}
    meta.update({k: json.dumps(v) for k, v in record.items() if v is not None})
    write_safetensors(out, tensors, metadata=meta)
    return features


def rows_path(out: str | os.PathLike[str]) -> Path:
    """Where the rows of features ``out`` (an .npy) are described: ``f.npy`` -> ``f.rows.json``."""
    return Path(out).with_suffix(".rows.json")


def save_reconstructions(model: Autoencoder, data: ImageSet, out: str | os.PathLike[str], *,
                         batch_size: int = 512, device: str = "cpu") -> None:
    """A PNG grid: ``data`` on top, the model's reconstructions below (a model that reconstructs
    another target, e.g. a smaller or single-channel one, is shown at the input's size)."""
    from aevision.report.plots import reconstruction_grid, shown_like

    if model.reconstructs != "images":
        raise AevisionError(f"this model ({model.spec.get('name', 'its architecture')}) reconstructs "
                            f"{model.reconstructs}, not images: there is nothing to draw")
    originals = data.floats()
    reconstruction_grid(out, originals, shown_like(reconstruct(model, data, batch_size, device), originals))
