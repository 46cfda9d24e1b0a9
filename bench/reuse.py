"""Resume a killed or crashed bench: a model folder finished earlier from exactly this config.

Shared by the bench scripts that train several models in sequence (compression, denoise), so a
late failure costs only the evaluation, not hours of training.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aevision.config import same_config


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
