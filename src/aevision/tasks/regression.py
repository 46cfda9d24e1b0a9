"""Linear regression probe: how linearly can the features predict a continuous target?

The regression twin of :mod:`aevision.tasks.probe`: ridge regression on standardised features,
the L2 strength chosen on held-out data only (a validation split, else k-fold cross-validation
inside the training set), scored by R^2 on a test set nothing was chosen on. One eigen-
decomposition serves every strength: of X^T X when features are fewer than samples, of the Gram
matrix X X^T otherwise (raw pixels: 12k features, a few thousand frames).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from aevision.data.splits import permutation
from aevision.tasks.probe import Standardizer

DEFAULT_ALPHAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4)


def r2_score(y: Tensor, y_hat: Tensor) -> float:
    """Coefficient of determination, averaged over output columns (sklearn's uniform average)."""
    y, y_hat = y.double().reshape(len(y), -1), y_hat.double().reshape(len(y), -1)
    ss_res = (y - y_hat).pow(2).sum(0)
    ss_tot = (y - y.mean(0)).pow(2).sum(0)
    ok = ss_tot > 0
    return float((1 - ss_res[ok] / ss_tot[ok]).mean()) if ok.any() else float("nan")


class _RidgePath:
    """Ridge solutions for many strengths from one decomposition of centred ``x`` (N, D)."""

    def __init__(self, x: Tensor, y: Tensor):
        self.x = x
        self.y = y.double()
        n, d = x.shape
        self.primal = d <= n
        if self.primal:
            gram = (x.T @ x).double()
            self.evals, self.evecs = torch.linalg.eigh(gram)
            self.proj = self.evecs.T @ (x.double().T @ self.y)  # V^T X^T y: (D, K)
        else:
            gram = (x @ x.T).double()
            self.evals, self.evecs = torch.linalg.eigh(gram)
            self.proj = self.evecs.T @ self.y  # U^T y: (N, K)

    def weights(self, alpha: float) -> Tensor:
        """(D, K) minimising ||X w - y||^2 + alpha ||w||^2."""
        scaled = self.proj / (self.evals.clamp_min(0) + alpha).unsqueeze(1)
        if self.primal:
            return (self.evecs @ scaled).float()
        return (self.x.T @ (self.evecs @ scaled).float())


@dataclass
class RidgeProbe:
    """``fit`` picks alpha on validation data (given, or k folds); ``predict`` / ``score`` (R^2).

    ``alpha`` multiplies the number of training samples, so one grid suits any data size.
    """

    alphas: Sequence[float] = DEFAULT_ALPHAS
    folds: int = 5
    seed: int = 0
    alpha_: float = field(init=False, default=float("nan"))
    selection_: dict[float, float] = field(init=False, default_factory=dict)

    def fit(self, x: Tensor, y: Tensor, x_val: Tensor | None = None, y_val: Tensor | None = None,
            groups: Tensor | None = None) -> RidgeProbe:
        """``y``: (N,) or (N, K). ``groups``: for cross-validation, samples of one group (frames
        of one video) stay in one fold, so correlated neighbours never validate each other."""
        y2 = y.float().reshape(len(y), -1)
        self.scaler_ = Standardizer.fit(x)
        xs = self.scaler_(x)
        if x_val is not None and y_val is not None and len(y_val):
            tasks = [(xs, y2, self.scaler_(x_val), y_val.float().reshape(len(y_val), -1))]
        else:
            tasks = []
            for held in self._folds(len(x), groups):
                mask = torch.ones(len(x), dtype=torch.bool)
                mask[held] = False
                tasks.append((xs[mask], y2[mask], xs[held], y2[held]))
        scores: dict[float, list[float]] = {a: [] for a in self.alphas}
        full = None
        for xt, yt, xv, yv in tasks:
            x_mean, y_mean = xt.mean(0), yt.mean(0)
            path = _RidgePath(xt - x_mean, yt - y_mean)
            if xt is xs:  # validation data given: the final fit is on these same samples
                full = path
            for a in self.alphas:
                w = path.weights(a * len(xt))
                scores[a].append(r2_score(yv, (xv - x_mean) @ w + y_mean))
        self.selection_ = {a: sum(s) / len(s) for a, s in scores.items()}
        best = max(self.selection_.values())
        # the strongest regularisation among the best scores: the safest choice on ties
        self.alpha_ = max(a for a, s in self.selection_.items() if s == best)
        x_mean, y_mean = xs.mean(0), y2.mean(0)
        full = full or _RidgePath(xs - x_mean, y2 - y_mean)
        self.w_ = full.weights(self.alpha_ * len(xs))
        self.b_ = y_mean - x_mean @ self.w_
        return self

    def _folds(self, n: int, groups: Tensor | None) -> list[Tensor]:
        if groups is None:
            return list(permutation(n, self.seed, 43).tensor_split(self.folds))
        ids = torch.unique(groups)
        order = ids[permutation(len(ids), self.seed, 43)]
        return [torch.nonzero(torch.isin(groups, part)).flatten()
                for part in order.tensor_split(min(self.folds, len(ids))) if len(part)]

    def predict(self, x: Tensor) -> Tensor:
        return self.scaler_(x) @ self.w_ + self.b_

    def score(self, x: Tensor, y: Tensor) -> float:
        return r2_score(y.float().reshape(len(y), -1), self.predict(x))
