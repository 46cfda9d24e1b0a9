"""Classification losses for imbalanced and noisy labels: weighted, focal, label-smoothed CE.

One formula covers every option. For a sample i with label y_i, predicted probabilities p_i and
K classes,

    l_i  = (1 - eps) * (-log p_{i,y_i}) + (eps / K) * sum_k (-log p_{i,k})    label smoothing eps
    f_i  = (1 - p_{i,y_i}) ** gamma                                            focal factor (Lin et al. 2017)
    a_i  = w_{y_i} * s_i                                                       class weight x sample weight
    loss = sum_i a_i f_i l_i / sum_i a_i

With eps = 0, gamma = 0 and no weights this is the mean cross-entropy; with class weights alone it
is exactly ``torch.nn.functional.cross_entropy(weight=w)`` (the "weighted log-likelihood"). The
focal factor is a per-sample weight that follows the sample's own loss: easy, confident samples
count less, hard ones more, without hand-tuned weights. It is left out of the normaliser, as in the
paper, so it scales the loss down as the model gets confident rather than renormalising it away.

Class weights (:func:`class_weights`): inverse frequency (``N / (K n_c)``, scikit-learn's
"balanced"), the effective number of samples (Cui et al. 2019: ``(1 - beta) / (1 - beta ** n_c)``,
scaled to average 1 per sample), or given by the user.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aevision.errors import ConfigError
from aevision.validation import check


@dataclass
class LossConfig:
    """How fine-tuning weighs its samples (see the module docstring for the formula)."""

    # "none", "inverse" (inverse class frequency), "effective" (effective number of samples), or
    # a list of K per-class weights
    class_weight: str | list[float] = "none"
    beta: float = 0.999  # effective-number hyper-parameter, in [0, 1)
    focal_gamma: float = 0.0  # 0: plain cross-entropy; 2: the focal loss paper's default
    label_smoothing: float = 0.0  # eps in [0, 1)

    def validate(self, prefix: str = "loss") -> None:
        if isinstance(self.class_weight, str):
            check(self.class_weight in ("none", "inverse", "effective"), f"{prefix}.class_weight",
                  self.class_weight, "'none', 'inverse', 'effective' or a list of per-class weights")
        else:
            check_weight_list(self.class_weight, f"{prefix}.class_weight")
        check(0.0 <= self.beta < 1.0, f"{prefix}.beta", self.beta, "a number in [0, 1)")
        check(self.focal_gamma >= 0.0, f"{prefix}.focal_gamma", self.focal_gamma, "a number >= 0")
        check(0.0 <= self.label_smoothing < 1.0, f"{prefix}.label_smoothing", self.label_smoothing,
              "a number in [0, 1)")

    @property
    def weighted(self) -> bool:
        return self.class_weight != "none"


def check_weight_list(weights: Sequence[float], field: str) -> None:
    """Per-class loss weights as a config gives them (the count is checked against the data later)."""
    check(len(weights) > 0 and all(w >= 0 for w in weights) and sum(weights) > 0, field, weights,
          "a list of non-negative per-class weights, not all zero")


def class_weights(counts: Tensor | Sequence[int], scheme: str | Sequence[float], beta: float = 0.999,
                  field: str = "loss.class_weight") -> Tensor | None:
    """Per-class weights (K,) for the class sizes ``counts``; None for ``scheme="none"``.

    Both automatic schemes are scaled so that the weights average 1 over the training samples
    (``sum_c n_c w_c = N``): the loss keeps the scale of plain cross-entropy, so the learning rate
    that suits one suits the other. A class with no samples gets weight 0 (it never appears).
    """
    n = torch.as_tensor(counts, dtype=torch.float64)
    if isinstance(scheme, str):
        if scheme == "none":
            return None
        present = n > 0
        if scheme == "inverse":
            raw = torch.where(present, 1.0 / n.clamp(min=1), torch.zeros_like(n))
        elif scheme == "effective":
            raw = torch.where(present, (1.0 - beta) / (1.0 - beta ** n), torch.zeros_like(n))
        else:
            raise ConfigError(field, scheme, "'none', 'inverse', 'effective' or a list of weights")
        return (raw * n.sum() / (raw * n).sum()).float()
    w = torch.as_tensor(list(scheme), dtype=torch.float32)
    if w.shape != n.shape:
        raise ConfigError(field, list(scheme), f"a list of {len(n)} weights (one per class)")
    return w


class ClassificationLoss(nn.Module):
    """``loss(logits (N, K), target (N,), sample_weight (N,) | None) -> scalar``."""

    def __init__(self, class_weight: Tensor | None = None, focal_gamma: float = 0.0,
                 label_smoothing: float = 0.0):
        super().__init__()
        # not persistent: weights follow the training set, not the checkpoint
        self.register_buffer("class_weight", class_weight if class_weight is None
                             else class_weight.detach().float().clone(), persistent=False)
        self.focal_gamma = float(focal_gamma)
        self.label_smoothing = float(label_smoothing)

    @classmethod
    def from_config(cls, cfg: LossConfig, counts: Tensor | Sequence[int]) -> ClassificationLoss:
        """The configured loss for a training set with class sizes ``counts``."""
        return cls(class_weights(counts, cfg.class_weight, cfg.beta), cfg.focal_gamma,
                   cfg.label_smoothing)

    def per_sample(self, logits: Tensor, target: Tensor) -> Tensor:
        """f_i * l_i: the (focal-scaled, smoothed) loss of each sample, unweighted; (N,)."""
        logp = F.log_softmax(logits.float(), dim=1)
        nll = -logp.gather(1, target.long().unsqueeze(1)).squeeze(1)
        eps = self.label_smoothing
        loss = nll if eps == 0 else (1 - eps) * nll - (eps / logits.shape[1]) * logp.sum(1)
        if self.focal_gamma:
            loss = (1 - torch.exp(-nll)).pow(self.focal_gamma) * loss
        return loss

    def forward(self, logits: Tensor, target: Tensor, sample_weight: Tensor | None = None) -> Tensor:
        loss = self.per_sample(logits, target)
        a = torch.ones_like(loss)
        if self.class_weight is not None:
            a = a * self.class_weight.to(loss.device)[target.long()]
        if sample_weight is not None:
            a = a * sample_weight.to(loss)
        return (a * loss).sum() / a.sum().clamp(min=torch.finfo(loss.dtype).tiny)

    def extra_repr(self) -> str:
        weighted = "class-weighted" if self.class_weight is not None else "unweighted"
        return f"{weighted}, focal_gamma={self.focal_gamma:g}, label_smoothing={self.label_smoothing:g}"
