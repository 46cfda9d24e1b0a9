"""``pretrain``: train an autoencoder as configured, through the run lifecycle (engine/run.py).

The run folder gets ``model.safetensors`` + ``config.json`` (the model and its provenance),
``summary.json`` (config, data, per-epoch history, timing, peak RSS, machine), the Trainer's
checkpoints and history, and ``run.json`` (the run's key and state). ``init_from`` starts from
trained weights (continued pretraining, a codec fine-tuned to another rate, transfer); ``reuse``
returns the identical finished run instead of training again, and resumes an unfinished one.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from aevision.config import VAL_BATCH_SIZE, PretrainConfig, build_config, to_dict, upgraded_config
from aevision.data import ImageSet, Splits, VideoSet, load_dataset, training_data
from aevision.data.augment import Augment
from aevision.data.batches import TensorBatches
from aevision.data.folder_stream import FolderListing
from aevision.data.plan import plan_data
from aevision.data.shards import ShardInfo
from aevision.engine import FitResult, Trainer, seed_everything
from aevision.engine.resources import limit_memory
from aevision.engine.run import Run, refuse_replacing, run_key, weights_sha256
from aevision.errors import AevisionError, ConfigError
from aevision.io import read_json
from aevision.models import Autoencoder, build_model, load_model, save_model
from aevision.models.io import WEIGHTS, load_weights_strict
from aevision.tasks.calibration import THRESHOLD_FILE
from aevision.tasks.html_report import REPORT
from aevision.tasks.streamed_data import data_key, stream_summary, streamed_batches


@dataclass
class PretrainResult:
    model: Autoencoder  # best weights (lowest validation loss), eval mode
    out_dir: Path
    fit: FitResult
    config: PretrainConfig
    data: Splits | ShardInfo | FolderListing  # streamed: the shards' manifest or the folder's files
    global_rank: int = 0  # under DDP every process returns; only rank 0 wrote the files
    reused: bool = False  # the identical run had finished in out_dir: read back, not trained
    timing: dict[str, Any] = field(default_factory=dict)  # wall_seconds, cpu_seconds, resumed

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


# files made from a model's weights beside them: stale once new weights are saved there
MADE_FROM_WEIGHTS = (THRESHOLD_FILE, REPORT)


def save_replacing(model: Autoencoder, folder: Path, provenance: dict[str, Any]) -> None:
    """Save ``model`` into ``folder``, removing what was made from the weights it replaces (an
    anomaly threshold calibrated for them would stop every later ``anomaly`` run; a report would
    describe another model)."""
    for name in MADE_FROM_WEIGHTS:
        (folder / name).unlink(missing_ok=True)
    save_model(model, folder, extra=provenance)


def pretrain(
    config: PretrainConfig | dict[str, Any] | str | os.PathLike[str] | None = None,
    *,
    overrides: Sequence[str] = (),
    resume: bool = False,
    data: Splits | None = None,
    init_from: str | os.PathLike[str] | None = None,
    reuse: bool = False,
    overwrite: bool = False,
) -> PretrainResult:
    """Train an autoencoder as configured, into ``config.output_dir``.

    ``data``: splits the caller already loaded (benchmarks), instead of loading ``config.data``.
    ``init_from``: a model folder or ``.safetensors`` file whose weights the model starts from
    (the same architecture). ``reuse``: when the folder holds the identical finished run (same
    config, data, starting weights and aevision version), return it without training; an
    unfinished one is resumed from its last checkpoint. A folder that holds a trained model is
    refused unless ``resume``, ``reuse`` or ``overwrite``.
    """
    cfg = as_config(config, overrides)
    refuse_replacing(cfg.output_dir, allowed=resume or reuse or overwrite)
    seed_everything(cfg.seed, cfg.train.deterministic)
    stream = plan_data(cfg.data).stream if data is None else None
    splits = data if data is not None or stream is not None else load_dataset(cfg.data, cfg.seed)
    model = model_from_config(cfg, stream.image_shape if stream else splits.train.image_shape)
    check_clip_length(cfg, model)
    init = start_from(model, init_from) if init_from is not None else None
    key = run_key(cfg.to_dict(), data=data_key(splits, stream), init=init)
    run = Run(cfg.output_dir, key, upgrade=upgraded_config)
    found: Splits | ShardInfo | FolderListing = stream if stream is not None else splits
    if reuse and run.finished() is not None:
        return read_back(run.out_dir, cfg, found)
    guard_memory(cfg)
    train, val = streamed_batches(cfg, stream) if stream is not None else pretrain_batches(cfg, splits)
    trainer = Trainer(cfg.train, run.out_dir, seed=cfg.seed)
    fit = run.fit(trainer, model, train, val, cfg.to_dict(), resume=resume, reuse=reuse, overwrite=overwrite,
                  upgrade_config=upgraded_config)
    model.eval()
    summary = stream_summary(stream) if stream is not None else data_summary(splits)
    provenance = {"config": cfg.to_dict(), "data": summary,
                  **({"init_from": {"path": str(init_from), "weights_sha256": init}} if init else {})}
    run.finish(lambda folder: save_replacing(model, folder, provenance),
               {"summary.json": {**provenance, "fit": fit.to_dict()}})
    return PretrainResult(model, run.out_dir, fit, cfg, found, trainer.fabric.global_rank,
                          timing=run.timing)


def start_from(model: Autoencoder, path: str | os.PathLike[str]) -> str:
    """Load the weights of a saved model (folder or ``.safetensors``) into ``model``, which the
    config built: every tensor with its shape, or a one-line error naming the file. Returns the
    weights' SHA-256 (the run key's ``init``)."""
    path = Path(path)
    weights = path / WEIGHTS if path.is_dir() else path
    if not weights.is_file():
        raise AevisionError(f"init_from: {path}: no model weights there (a model folder or a .safetensors "
                            f"file)")
    load_weights_strict(model, weights, Path("the model this config builds"))
    return weights_sha256(weights)


def read_back(out_dir: Path, cfg: PretrainConfig, splits: Splits | ShardInfo | FolderListing
              ) -> PretrainResult:
    """The identical run already finished in ``out_dir``: its model and its fit, as trained."""
    summary = read_json(out_dir / "summary.json", "run summary")
    timing = {k: summary.get(k) for k in ("wall_seconds", "cpu_seconds", "resumed")}
    return PretrainResult(load_model(out_dir), out_dir, FitResult(**summary["fit"]), cfg, splits,
                          reused=True, timing=timing)


def guard_memory(cfg: PretrainConfig) -> None:
    """Cap the process's memory on a CPU run (``train.max_memory_gb``), after imports and data."""
    if cfg.train.max_memory_gb is not None and cfg.train.accelerator in ("cpu", "auto") \
            and not torch.cuda.is_available():
        limit_memory(cfg.train.max_memory_gb)


def pretrain_batches(cfg: PretrainConfig, splits: Splits) -> tuple[TensorBatches, TensorBatches | None]:
    """Shuffled training batches (augmented when configured; clips of frames for video) and
    validation batches in order."""
    bs, clip, stride = cfg.train.batch_size, cfg.data.clip_length, cfg.data.clip_stride
    train = TensorBatches(training_data(splits.train, clip, stride), bs, seed=cfg.seed, shuffle=True,
                          drop_last=True, transform=Augment(cfg.augment) if cfg.augment.active else None)
    val = (TensorBatches(training_data(splits.val, clip, stride), max(bs, VAL_BATCH_SIZE // (clip or 1)),
                         shuffle=False)
           if splits.val is not None and len(splits.val) else None)
    return train, val


def check_clip_length(cfg: PretrainConfig, model: Autoencoder) -> None:
    """Regularizers over time (smoothness) need clips of ordered frames: say so before training."""
    have = cfg.data.clip_length or 1
    for i, reg in enumerate(model.regularizers):
        if reg.min_frames > have:
            name = cfg.regularizers[i].name
            raise ConfigError("data.clip_length", cfg.data.clip_length,
                              f"an integer >= {reg.min_frames}: regularizers[{i}] ({name}) needs clips of "
                              f"ordered frames from a video dataset")


def data_summary(splits: Splits) -> dict[str, Any]:
    def one(s: ImageSet | VideoSet | None) -> dict[str, Any] | None:
        if s is None:
            return None
        if isinstance(s, VideoSet):
            return {"sequences": len(s), "frames_per_sequence": s.sequence_length,
                    "image_shape": list(s.image_shape), "labelled": s.labels is not None}
        return {"images": len(s), "image_shape": list(s.image_shape),
                "labelled": s.labels is not None}

    return {
        "name": splits.train.name,
        "train": one(splits.train), "val": one(splits.val), "test": one(splits.test),
        "classes": splits.train.classes,
        "skipped_files": [{"path": s.path, "reason": s.reason} for s in splits.train.skipped],
    }
