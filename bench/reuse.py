"""Resume a killed or crashed bench: a model folder finished earlier from exactly this config, and
an unfinished run continued from its last checkpoint.

Shared by the bench scripts that train several models in sequence (compression, denoise,
segmentation), so a late failure costs only the evaluation, and a kill only the unfinished part of
one run, not hours of training.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from aevision.config import same_config
from aevision.engine.checkpoint import LAST
from aevision.io import write_json

STARTED = "bench.started.json"


def history_rows(text: str) -> list[dict[str, str]]:
    """The per-epoch rows of a training run's ``history.csv`` (its text), as written by the engine."""
    lines = text.splitlines()
    return [dict(zip(lines[0].split(","), line.split(","), strict=True)) for line in lines[1:]]


def finished_model(out_dir: Path, config: dict[str, Any], **extra: Any) -> dict[str, Any] | None:
    """Training info of the model saved in ``out_dir`` when its ``config.json`` holds ``config``
    (:func:`aevision.config.same_config`: fields added since take their defaults) and every
    ``extra`` key, else None."""
    try:
        saved = json.loads((out_dir / "config.json").read_text())
        history = (out_dir / "history.csv").read_text()
    except (OSError, ValueError):
        return None
    if not (out_dir / "model.safetensors").exists():
        return None
    if not same_config(saved.get("config"), config) or any(saved.get(k) != v for k, v in extra.items()):
        return None
    rows = history_rows(history)
    return {"epochs": len(rows), "steps": int(rows[-1]["step"]) if rows else None,
            "train_seconds": round(sum(float(r["train_seconds"]) for r in rows), 1),
            "reused": "trained by an earlier run of this script (same config)", "dir": str(out_dir)}


def resumable(out_dir: Path, key: dict[str, Any]) -> bool:
    """Whether the run about to start in ``out_dir`` continues from its last checkpoint: only when
    the run that wrote it started under the same ``key``. Benches pass their data in, so the
    checkpoint's own config (which the engine checks) does not describe the data; the key does.
    A checkpoint of another key is deleted, so that no later run under this key resumes it; the key
    is recorded either way."""
    last = out_dir / "checkpoints" / LAST
    try:
        started = json.loads((out_dir / STARTED).read_text()).get("bench_config")
    except (OSError, ValueError, AttributeError):
        started = None
    resume = started == json.loads(json.dumps(key)) and last.is_file()
    if not resume:
        last.unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / STARTED, {"bench_config": key})
    return resume


def forget(out_dir: Path) -> None:
    """Keep :func:`resumable` from resuming the unfinished run in ``out_dir``: for a run whose inputs
    changed in a way its key cannot see (a bench retrained the model it was built around)."""
    (out_dir / STARTED).unlink(missing_ok=True)


def fingerprint(images: torch.Tensor) -> str:
    """SHA-256 of a tensor's contents: the training data's part of a :func:`resumable` key."""
    return hashlib.sha256(images.contiguous().numpy()).hexdigest()  # no copy of the bytes
