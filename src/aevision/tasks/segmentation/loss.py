"""The segmentation objective: weighted cross-entropy plus soft Dice, unknown pixels skipped.

Cross-entropy scores every pixel alone, so a class covering 2% of the image barely moves it;
soft Dice (Milletari et al. 2016) scores each class's overlap as a whole, so small classes count
as much as large ones. Class weights scale the cross-entropy of rare classes further.

    ce   = sum_p w[y_p] * -log softmax(s_p)[y_p] / sum_p w[y_p]          (p over known pixels)
    dice = 1 - mean_c (2 sum_p P_pc Y_pc + 1) / (sum_p P_pc + sum_p Y_pc + 1)
    loss = ce_weight * ce + dice_weight * dice
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aevision.data.segset import IGNORE_INDEX


class SegLoss(nn.Module):
    def __init__(self, num_classes: int, *, ce_weight: float = 1.0, dice_weight: float = 1.0,
                 class_weights: Sequence[float] | Tensor | None = None, ignore_index: int = IGNORE_INDEX,
                 smooth: float = 1.0):
        super().__init__()
        self.num_classes = num_classes
        self.ce_weight, self.dice_weight = float(ce_weight), float(dice_weight)
        self.ignore_index, self.smooth = ignore_index, float(smooth)
        weights = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        if weights is not None and weights.shape != (num_classes,):
            raise ValueError(f"class_weights: expected {num_classes} weights, got {tuple(weights.shape)}")
        # not persistent: a training setting, not part of the saved segmenter
        self.register_buffer("class_weights", weights, persistent=False)

    def forward(self, logits: Tensor, target: Tensor) -> dict[str, Tensor]:
        """``logits`` (N, K, H, W), ``target`` (N, H, W) class ids -> {loss, ce, dice}."""
        logits = logits.float()
        t = target.long()
        valid = t != self.ignore_index
        zero = logits.sum() * 0.0  # keeps the graph when a batch has no known pixel
        if not bool(valid.any()):
            return {"loss": zero, "ce": zero, "dice": zero}
        ce = F.cross_entropy(logits, t, weight=self.class_weights, ignore_index=self.ignore_index)
        probs = logits.softmax(dim=1) * valid[:, None]
        onehot = F.one_hot(torch.where(valid, t, 0), self.num_classes).permute(0, 3, 1, 2)
        onehot = onehot * valid[:, None]
        inter = (probs * onehot).sum(dim=(0, 2, 3))
        denom = probs.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
        dice = 1.0 - ((2.0 * inter + self.smooth) / (denom + self.smooth)).mean()
        loss = self.ce_weight * ce + self.dice_weight * dice
        return {"loss": loss, "ce": ce, "dice": dice}


def balanced_weights(pixel_counts: Tensor) -> list[float]:
    """Inverse class frequency, ``total / (K * count_c)`` (scikit-learn's "balanced"); classes
    absent from the training masks get weight 1."""
    counts = pixel_counts.double()
    k = len(counts)
    total = counts.sum()
    w = torch.where(counts > 0, total / (k * counts.clamp_min(1)), torch.ones_like(counts))
    return [round(float(v), 6) for v in w]
