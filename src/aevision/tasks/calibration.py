"""Anomaly thresholds from normal images only: split conformal calibration.

A model trained on normal images scores new images (higher = more anomalous). Without anomalies
to tune on, the one error rate that can be controlled is the false-positive rate: how often a
normal image is flagged. Split conformal prediction gives it: score ``n`` normal images that the
model never trained on, and take the ``k = ceil((n + 1)(1 - fpr))``-th smallest score as the
threshold. A new normal image exchangeable with them then scores above it with probability at
most ``fpr`` (and at least ``fpr - 1/(n + 1)``), whatever the score's distribution.

:class:`Threshold` is what is stored beside the model (``threshold.json``, written atomically):
the threshold, the target rate, ``n`` and ``k``, the score it is for, and the SHA-256 of the
model's weights. A stored threshold whose hash is not the model's is refused: it was calibrated
on another model's scores.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from aevision.errors import AevisionError
from aevision.io import file_sha256, read_json, write_json
from aevision.models.io import model_files

THRESHOLD_FILE = "threshold.json"
METHOD = "split conformal: the ceil((n+1)(1-fpr))-th smallest score of n held-out normal images"


def conformal_rank(n: int, fpr: float) -> int:
    """The rank ``k = ceil((n + 1)(1 - fpr))`` (1-based) of the threshold among ``n`` sorted
    calibration scores; a one-line error when ``n`` is too small for ``fpr`` (k > n)."""
    if not 0.0 < fpr < 1.0:
        raise AevisionError(f"--fpr {fpr}: expected a fraction in (0, 1)")
    k = math.ceil((n + 1) * (1.0 - fpr) - 1e-9)  # (n+1)(1-fpr) is often an integer up to rounding
    if k > n:
        raise AevisionError(f"calibration: {n} normal images are too few for --fpr {fpr:g}: "
                            f"need at least {math.ceil((1.0 - fpr) / fpr - 1e-9)}")
    return max(k, 1)


def conformal_threshold(scores: Tensor, fpr: float) -> tuple[float, int]:
    """(threshold, k): the ``k``-th smallest of the calibration ``scores`` (N,) for a
    false-positive rate of at most ``fpr``; an image is anomalous when its score is above it."""
    s = torch.as_tensor(scores).flatten().double()
    if not bool(torch.isfinite(s).all()):
        raise AevisionError("calibration: scores contain NaN or inf")
    k = conformal_rank(len(s), fpr)
    return float(s.sort().values[k - 1]), k


def model_sha256(model_path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a saved model's weights (its folder or its ``.safetensors`` file)."""
    return file_sha256(model_files(model_path)[1])


@dataclass
class Threshold:
    """A calibrated threshold: ``scores > threshold`` are anomalous (see the module docstring)."""

    threshold: float
    target_fpr: float
    calibration_images: int
    rank: int
    score: dict[str, Any]  # the score it is for: {"score": "recon"} or a density and its reference
    model_sha256: str
    calibration: str  # where the normal images came from
    method: str = METHOD

    @classmethod
    def fit(cls, scores: Tensor, fpr: float, score: dict[str, Any], model_path: str | os.PathLike[str],
            calibration: str) -> Threshold:
        threshold, k = conformal_threshold(scores, fpr)
        return cls(threshold, fpr, len(scores), k, score, model_sha256(model_path), calibration)

    def flags(self, scores: Tensor) -> Tensor:
        """1 for each anomalous image (score above the threshold), else 0: (N,) int64."""
        return (torch.as_tensor(scores) > self.threshold).long()

    def rule(self) -> str:
        return (f"calibrated for false-positive rate {self.target_fpr:g} on "
                f"{self.calibration_images} normal images ({self.calibration})")

    def save(self, model_path: str | os.PathLike[str]) -> Path:
        path = model_files(model_path)[0] / THRESHOLD_FILE
        write_json(path, asdict(self))
        return path


def stored_threshold(model_path: str | os.PathLike[str]) -> Threshold | None:
    """The threshold stored beside the model, None when there is none; a one-line error when it
    does not belong to these weights or is not a threshold file."""
    path = model_files(model_path)[0] / THRESHOLD_FILE
    if not path.is_file():
        return None
    raw = read_json(path, "anomaly threshold")
    try:
        found = Threshold(**raw)
        float(found.threshold)
    except (TypeError, ValueError):
        raise AevisionError(f"{path}: not an anomaly threshold file; calibrate again with "
                            f"--calibrate") from None
    if found.model_sha256 != model_sha256(model_path):
        raise AevisionError(f"{path}: calibrated for other weights (model hash "
                            f"{found.model_sha256[:12]}...); calibrate this model again with --calibrate")
    return found
