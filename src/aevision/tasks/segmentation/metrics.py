"""Segmentation scores from torchmetrics, accumulated over a whole split (PASCAL VOC style).

Each class's IoU is TP / (TP + FP + FN) counted over every pixel of every image (not averaged per
image), and mean IoU averages the classes. A class that appears in neither the masks nor the
predictions has no IoU (None in the JSON) and is left out of the mean, instead of counting as 0
or 1. Dice per class is the F1 score, 2 TP / (2 TP + FP + FN); pixel accuracy is the fraction of
known pixels predicted right. Unknown pixels (255) count nowhere.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score, MulticlassJaccardIndex

from aevision.data.segset import IGNORE_INDEX


class SegMetrics:
    """``update(preds, masks)`` batch by batch, then ``compute()`` -> a JSON-ready dict."""

    def __init__(self, classes: list[str], ignore_index: int = IGNORE_INDEX):
        k = len(classes)
        self.classes = list(classes)
        kw: dict[str, Any] = {"num_classes": k, "ignore_index": ignore_index, "validate_args": False}
        self.iou = MulticlassJaccardIndex(average="none", zero_division=float("nan"), **kw)
        self.dice = MulticlassF1Score(average="none", **kw)
        self.acc = MulticlassAccuracy(average="micro", **kw)
        self.pixels = 0
        self.ignore_index = ignore_index

    def update(self, preds: Tensor, masks: Tensor) -> None:
        """``preds``: (N, H, W) class ids; ``masks``: (N, H, W) true ids (255 = unknown)."""
        p, t = preds.long().flatten(), masks.long().flatten()
        for m in (self.iou, self.dice, self.acc):
            m.update(p, t)
        self.pixels += int((t != self.ignore_index).sum())

    def compute(self) -> dict[str, Any]:
        iou = self.iou.compute().double().reshape(-1)  # one class: a 0-d tensor otherwise
        present = ~torch.isnan(iou)
        dice = self.dice.compute().double().reshape(-1)
        per_iou = _per_class(self.classes, iou, present)
        per_dice = _per_class(self.classes, dice, present)
        return {
            "miou": float(iou[present].mean()) if present.any() else math.nan,
            "iou": per_iou,
            "mean_dice": float(dice[present].mean()) if present.any() else math.nan,
            "dice": per_dice,
            "pixel_accuracy": float(self.acc.compute()),
            "pixels": self.pixels,
        }


def _per_class(classes: list[str], values: Tensor, present: Tensor) -> dict[str, float | None]:
    return {c: (float(v) if ok else None) for c, v, ok in zip(classes, values, present, strict=True)}


def segmentation_metrics(preds: Tensor, masks: Tensor, classes: list[str],
                         ignore_index: int = IGNORE_INDEX) -> dict[str, Any]:
    """Scores of predicted ``preds`` against ``masks`` (both (N, H, W) class ids)."""
    m = SegMetrics(classes, ignore_index)
    m.update(preds, masks)
    return m.compute()
