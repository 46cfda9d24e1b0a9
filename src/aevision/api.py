"""The Python API: everything the CLI does is a call here.

    import aevision
    result = aevision.pretrain({"model": {"name": "conv"}, "data": {"name": "digits"}})
    model = aevision.load(result.out_dir)
    features = aevision.encode(model, images)
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from aevision.errors import AevisionError
from aevision.models import Autoencoder, load_model
from aevision.models.inference import as_float_images as as_float_images  # re-exported: the API
from aevision.models.inference import encode as encode
from aevision.models.inference import reconstruct as reconstruct
from aevision.provenance import machine_info as machine_info
from aevision.tasks.export import export_model as export_model
from aevision.tasks.pretrain import PretrainResult as PretrainResult
from aevision.tasks.pretrain import as_config as as_config
from aevision.tasks.pretrain import check_clip_length as check_clip_length
from aevision.tasks.pretrain import data_summary as data_summary
from aevision.tasks.pretrain import model_from_config as model_from_config
from aevision.tasks.pretrain import pretrain as pretrain


def load(path: str | os.PathLike[str], device: str = "cpu") -> Autoencoder:
    """A saved model (run folder or ``model.safetensors``), eval mode, ready to ``encode``."""
    return load_model(path, device)


class FeatureExtractor:
    """scikit-learn transformer: images -> autoencoder features, for ``Pipeline``s.

    ``X`` is (N, C, H, W) or flattened (N, C*H*W), uint8 or float in [0, 1]. The constructor only
    stores parameters (sklearn convention); the model is loaded in ``fit``.
    """

    def __init__(self, model_path: str | None = None, batch_size: int = 1024, device: str = "cpu"):
        self.model_path = model_path
        self.batch_size = batch_size
        self.device = device

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {"model_path": self.model_path, "batch_size": self.batch_size, "device": self.device}

    def set_params(self, **params: Any) -> FeatureExtractor:
        for k, v in params.items():
            if k not in self.get_params():
                raise ValueError(f"FeatureExtractor has no parameter {k!r}")
            setattr(self, k, v)
        return self

    def fit(self, X: Any = None, y: Any = None) -> FeatureExtractor:
        if self.model_path is None:
            raise AevisionError("FeatureExtractor.model_path: set it to a saved model folder")
        self.model_ = load_model(self.model_path, self.device)
        return self

    def transform(self, X: Any) -> np.ndarray:
        if not hasattr(self, "model_"):
            self.fit()
        x = torch.as_tensor(np.asarray(X))
        if x.dim() == 2:
            x = x.reshape(len(x), *self.model_.input_shape)
        return encode(self.model_, x, self.batch_size, self.device).numpy()

    def fit_transform(self, X: Any, y: Any = None) -> np.ndarray:
        return self.fit(X, y).transform(X)
