"""k-nearest-neighbour classification with cosine similarity: the probe with no training.

A linear probe asks whether classes are linearly separable; kNN asks whether neighbours in feature
space share a label, with nothing fitted that could compensate for poor features. Features are
L2-normalised, so the k nearest are the k most cosine-similar. Each neighbour votes for its label
with a weight:

- ``"exp"`` (default): ``exp(s / T)`` for cosine similarity s, temperature T (Wu et al. 2018, the
  weighting self-supervised papers report);
- ``"distance"``: ``1 / (1 - s)``, scikit-learn's ``weights="distance"`` with the cosine metric
  (a neighbour at distance 0 takes the vote alone, as in scikit-learn);
- ``"uniform"``: one vote each.

Queries run in chunks against the whole training set, so memory stays at ``chunk x N``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from aevision.errors import AevisionError

Weights = Literal["exp", "distance", "uniform"]


@dataclass
class KNNClassifier:
    """``fit(x, y)`` stores normalised features; ``predict`` / ``predict_proba`` / ``score``."""

    k: int = 20
    weights: Weights = "exp"
    temperature: float = 0.07
    chunk: int = 1024
    n_classes_: int = field(init=False, default=0)

    def fit(self, x: Tensor, y: Tensor, n_classes: int | None = None) -> KNNClassifier:
        if self.k < 1:
            raise AevisionError(f"knn.k: got {self.k}, expected an integer >= 1")
        if self.weights not in ("exp", "distance", "uniform"):
            raise AevisionError(f"knn.weights: got {self.weights!r}, expected 'exp', 'distance' "
                                f"or 'uniform'")
        if len(x) == 0:
            raise AevisionError("knn: no training samples")
        self.x_ = F.normalize(x.float(), dim=1)
        self.y_ = y.long()
        self.n_classes_ = int(n_classes or int(self.y_.max()) + 1)
        return self

    def predict_proba(self, x: Tensor) -> Tensor:
        """Normalised vote shares, (N, K)."""
        k = min(self.k, len(self.x_))
        out = []
        for q in F.normalize(x.float(), dim=1).split(self.chunk):
            sim, idx = (q @ self.x_.T).topk(k, dim=1)
            votes = torch.zeros(len(q), self.n_classes_)
            votes.scatter_add_(1, self.y_[idx], self._vote_weights(sim))
            out.append(votes / votes.sum(1, keepdim=True))
        return torch.cat(out) if out else torch.empty(0, self.n_classes_)

    def _vote_weights(self, sim: Tensor) -> Tensor:
        if self.weights == "uniform":
            return torch.ones_like(sim)
        if self.weights == "exp":
            # shift by the row maximum: the same shares, no overflow for small temperatures
            return torch.exp((sim - sim[:, :1]) / self.temperature)
        dist = (1.0 - sim).clamp(min=0.0)
        exact = dist <= 1e-7
        return torch.where(exact.any(1, keepdim=True), exact.float(), 1.0 / dist.clamp(min=1e-7))

    def predict(self, x: Tensor) -> Tensor:
        return self.predict_proba(x).argmax(dim=1)

    def score(self, x: Tensor, y: Tensor) -> float:
        return float((self.predict(x) == y.long()).float().mean())
