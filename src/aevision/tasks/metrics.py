"""Classification metrics (torchmetrics): what every protocol reports on the test split.

Accuracy alone hides what imbalance does: a classifier that ignores a rare class loses little
accuracy but a whole class of recall. So every result carries balanced accuracy (the mean of the
per-class recalls), macro-F1, per-class precision and recall, and the confusion matrix.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
)

from aevision.io import write_json


def classification_metrics(pred: Tensor, target: Tensor, n_classes: int,
                           class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """Metrics of predicted labels ``pred`` (N,) against ``target`` (N,), as plain numbers.

    Classes absent from ``target`` are left out of the macro averages (their recall is undefined)
    rather than counted as zero.
    """
    pred, target = pred.long().cpu(), target.long().cpu()
    present = torch.bincount(target, minlength=n_classes) > 0
    args = {"num_classes": n_classes, "validate_args": False}
    recall = multiclass_recall(pred, target, average="none", **args)
    precision = multiclass_precision(pred, target, average="none", **args)
    f1 = multiclass_f1_score(pred, target, average="none", **args)
    names = list(class_names) if class_names is not None else [str(i) for i in range(n_classes)]
    return {
        "accuracy": float(multiclass_accuracy(pred, target, average="micro", **args)),
        "balanced_accuracy": float(recall[present].mean()) if present.any() else float("nan"),
        "macro_f1": float(f1[present].mean()) if present.any() else float("nan"),
        "per_class": {
            "classes": names,
            "precision": [round(float(v), 6) for v in precision],
            "recall": [round(float(v), 6) for v in recall],
            "support": torch.bincount(target, minlength=n_classes).tolist(),
        },
        "confusion_matrix": multiclass_confusion_matrix(pred, target, **args).tolist(),
        "n": len(target),
    }


def balanced_accuracy(pred: Tensor, target: Tensor, n_classes: int) -> float:
    """Mean recall over the classes present in ``target``."""
    recall = multiclass_recall(pred.long(), target.long(), num_classes=n_classes, average="none",
                               validate_args=False)
    present = torch.bincount(target.long(), minlength=n_classes) > 0
    return float(recall[present].mean())


def save_confusion(stem: str | os.PathLike[str], metrics: dict[str, Any], title: str = "") -> None:
    """``stem.json`` (matrix, classes, per-class metrics) and ``stem.png`` (the heatmap)."""
    from aevision.report.classification import confusion_matrix_png

    stem = str(stem)
    write_json(stem + ".json", {
        "title": title,
        "classes": metrics["per_class"]["classes"],
        "rows": "true class", "columns": "predicted class",
        "matrix": metrics["confusion_matrix"],
        "accuracy": metrics["accuracy"], "balanced_accuracy": metrics["balanced_accuracy"],
        "per_class": metrics["per_class"],
    })
    confusion_matrix_png(stem + ".png", metrics["confusion_matrix"], metrics["per_class"]["classes"],
                         title)
