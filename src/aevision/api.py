"""The Python API: everything the CLI does is a call here.

    import aevision
    result = aevision.pretrain({"model": {"name": "conv"}, "data": {"name": "digits"}})
    model = aevision.load(result.out_dir)
    features = aevision.encode(model, images)
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aevision.config import VAL_BATCH_SIZE, PretrainConfig, build_config, to_dict, upgraded_config
from aevision.data import ImageSet, Splits, VideoSet, load_dataset, training_data
from aevision.data.augment import Augment
from aevision.data.batches import TensorBatches
from aevision.engine import FitResult, Trainer, seed_everything
from aevision.engine.resources import limit_memory, peak_rss_mib
from aevision.errors import AevisionError, ConfigError
from aevision.io import write_json
from aevision.models import Autoencoder, build_model, load_model, save_model
from aevision.models.inference import as_float_images as as_float_images  # re-exported: the API
from aevision.models.inference import encode as encode
from aevision.models.inference import reconstruct as reconstruct
from aevision.provenance import machine_info


@dataclass
class PretrainResult:
    model: Autoencoder  # best weights (lowest validation loss), eval mode
    out_dir: Path
    fit: FitResult
    config: PretrainConfig
    data: Splits
    global_rank: int = 0  # under DDP every process returns; only rank 0 wrote the files

    @property
    def history(self) -> list[dict[str, Any]]:
        return self.fit.history


def as_config(config: PretrainConfig | dict[str, Any] | str | os.PathLike[str] | None,
              overrides: Sequence[str] = ()) -> PretrainConfig:
    """A :class:`PretrainConfig` from an object, a mapping, or a YAML file path (+ overrides)."""
    if isinstance(config, PretrainConfig):
        return build_config(base=config.to_dict(), overrides=list(overrides)) if overrides else config
    if isinstance(config, dict):
        return build_config(base=config, overrides=list(overrides))
    return build_config(config, list(overrides))


def model_from_config(cfg: PretrainConfig, input_shape: Sequence[int]) -> Autoencoder:
    return build_model(cfg.model.name, input_shape, cfg.model.options,
                       [to_dict(r) for r in cfg.regularizers], cfg.model.reconstruction)


def pretrain(
    config: PretrainConfig | dict[str, Any] | str | os.PathLike[str] | None = None,
    *,
    overrides: Sequence[str] = (),
    resume: bool = False,
    data: Splits | None = None,
) -> PretrainResult:
    """Train an autoencoder as configured; write ``model.safetensors`` + ``config.json`` and a
    ``summary.json`` (config, per-epoch history, data, timing) into ``config.output_dir``.

    ``data`` lets callers that already loaded the dataset (benchmarks) skip loading it again.
    """
    cfg = as_config(config, overrides)
    seed_everything(cfg.seed, cfg.train.deterministic)
    splits = data if data is not None else load_dataset(cfg.data, cfg.seed)
    model = model_from_config(cfg, splits.train.image_shape)
    check_clip_length(cfg, model)
    if cfg.train.max_memory_gb is not None and cfg.train.accelerator in ("cpu", "auto") \
            and not torch.cuda.is_available():
        limit_memory(cfg.train.max_memory_gb)  # after imports and data: guards the training
    out_dir = Path(cfg.output_dir)
    bs = cfg.train.batch_size
    clip, stride = cfg.data.clip_length, cfg.data.clip_stride
    train = TensorBatches(training_data(splits.train, clip, stride), bs, seed=cfg.seed, shuffle=True,
                          drop_last=True, transform=Augment(cfg.augment) if cfg.augment.active else None)
    val = (TensorBatches(training_data(splits.val, clip, stride), max(bs, VAL_BATCH_SIZE // (clip or 1)),
                         shuffle=False)
           if splits.val is not None and len(splits.val) else None)
    trainer = Trainer(cfg.train, out_dir, seed=cfg.seed)
    started = time.time()
    fit = trainer.fit(model, train, val, cfg.to_dict(), resume=resume, upgrade_config=upgraded_config)
    model.eval()
    if trainer.fabric.is_global_zero:
        provenance = {"config": cfg.to_dict(), "data": data_summary(splits)}
        save_model(model, out_dir, extra=provenance)
        write_json(out_dir / "summary.json", {
            **provenance,
            "fit": fit.to_dict(),
            "wall_seconds": round(time.time() - started, 3),
            "peak_rss_mib": peak_rss_mib(),  # the whole process: data, model and training
            "machine": machine_info(),
        })
    return PretrainResult(model, out_dir, fit, cfg, splits, trainer.fabric.global_rank)


def check_clip_length(cfg: PretrainConfig, model: Autoencoder) -> None:
    """Regularizers over time (smoothness) need clips of ordered frames: say so before training."""
    have = cfg.data.clip_length or 1
    for i, reg in enumerate(model.regularizers):
        if reg.min_frames > have:
            name = cfg.regularizers[i].name
            raise ConfigError("data.clip_length", cfg.data.clip_length,
                              f"an integer >= {reg.min_frames}: regularizers[{i}] ({name}) needs clips of "
                              f"ordered frames from a video dataset")


def load(path: str | os.PathLike[str], device: str = "cpu") -> Autoencoder:
    """A saved model (run folder or ``model.safetensors``), eval mode, ready to ``encode``."""
    return load_model(path, device)


def data_summary(splits: Splits) -> dict[str, Any]:
    def one(s: ImageSet | VideoSet | None) -> dict[str, Any] | None:
        if s is None:
            return None
        if isinstance(s, VideoSet):
            return {"sequences": len(s), "frames_per_sequence": s.sequence_length,
                    "image_shape": list(s.image_shape), "labelled": s.labels is not None}
        return {"images": len(s), "image_shape": list(s.image_shape),
                "labelled": s.labels is not None}

    skipped = splits.train.skipped
    return {
        "name": splits.train.name,
        "train": one(splits.train), "val": one(splits.val), "test": one(splits.test),
        "classes": splits.train.classes,
        "skipped_files": [{"path": s.path, "reason": s.reason} for s in skipped],
    }


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
