"""Linear probe: how linearly separable are the features? The standard test of a representation.

Multinomial logistic regression on standardised features, fitted full-batch with L-BFGS in torch
(60k x 1k features in seconds on two cores). The L2 strength is chosen on held-out data only: a
validation split when there is one, else stratified cross-validation inside the labelled set (the
honest choice when labels are few). The test set is never seen while choosing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from aevision.data.splits import permutation

DEFAULT_C_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)


@dataclass
class Standardizer:
    """Feature-wise (x - mean) / std, statistics from training features only."""

    mean: Tensor
    std: Tensor

    @classmethod
    def fit(cls, x: Tensor) -> Standardizer:
        x = x.double()
        std = x.std(dim=0, unbiased=False)
        return cls(x.mean(dim=0).float(), torch.where(std > 1e-8, std, torch.ones_like(std)).float())

    def __call__(self, x: Tensor) -> Tensor:
        return (x.float() - self.mean) / self.std


def fit_logistic(x: Tensor, y: Tensor, n_classes: int, c: float, max_iter: int = 200,
                 init: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """Weights (D, K) and bias (K,) minimising mean CE + ||W||^2 / (2 C n), sklearn's objective."""
    n, d = x.shape
    w = (init[0].clone() if init else torch.zeros(d, n_classes)).requires_grad_(True)
    b = (init[1].clone() if init else torch.zeros(n_classes)).requires_grad_(True)
    l2 = 1.0 / (c * n)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=20,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-6,
                            tolerance_change=1e-10)

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(x @ w + b, y) + 0.5 * l2 * w.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach(), b.detach()


def stratified_folds(y: Tensor, k: int, seed: int) -> list[Tensor]:
    """k disjoint index sets, each class spread evenly across them."""
    folds: list[list[Tensor]] = [[] for _ in range(k)]
    for c in torch.unique(y).tolist():
        idx = torch.nonzero(y == c).flatten()
        idx = idx[permutation(len(idx), seed, 41, c)]
        for i, part in enumerate(idx.tensor_split(k)):
            folds[i].append(part)
    return [torch.cat(f) for f in folds]


@dataclass
class LinearProbe:
    """``fit`` chooses C on validation data (given, or CV folds); ``predict`` / ``score``."""

    c_grid: Sequence[float] = DEFAULT_C_GRID
    max_iter: int = 200
    folds: int = 5
    seed: int = 0
    c_: float = field(init=False, default=float("nan"))
    selection_: dict[float, float] = field(init=False, default_factory=dict)

    def fit(self, x: Tensor, y: Tensor, x_val: Tensor | None = None, y_val: Tensor | None = None,
            scaler_data: Tensor | None = None, n_classes: int | None = None) -> LinearProbe:
        """``scaler_data``: features to take standardisation statistics from (e.g. all unlabelled
        training features; default ``x``). Validation labels choose C, nothing else."""
        y = y.long()
        self.n_classes_ = int(n_classes or (int(y.max()) + 1))
        self.scaler_ = Standardizer.fit(scaler_data if scaler_data is not None else x)
        xs = self.scaler_(x)
        if x_val is not None and y_val is not None and len(y_val):
            xv = self.scaler_(x_val)
            self.selection_ = self._path(xs, y, [(xs, y, xv, y_val.long())])
        else:
            counts = torch.bincount(y, minlength=self.n_classes_)
            k = min(self.folds, int(counts[counts > 0].min()))
            if k >= 2 and len(self.c_grid) > 1:
                splits = stratified_folds(y, k, self.seed)
                tasks = []
                for i in range(k):
                    mask = torch.ones(len(y), dtype=torch.bool)
                    mask[splits[i]] = False
                    tasks.append((xs[mask], y[mask], xs[splits[i]], y[splits[i]]))
                self.selection_ = self._path(xs, y, tasks)
            else:  # too few labels to validate anything: sklearn's default strength
                self.selection_ = {1.0: float("nan")}
        best = max(self.selection_.values()) if not all(
            math.isnan(v) for v in self.selection_.values()) else None
        # the strongest regularisation among the best scores: the safest choice on ties
        self.c_ = min(c for c, s in self.selection_.items() if best is None or s == best) \
            if best is not None else 1.0
        self.w_, self.b_ = fit_logistic(xs, y, self.n_classes_, self.c_, self.max_iter)
        return self

    def _path(self, xs: Tensor, y: Tensor, tasks: list[tuple[Tensor, Tensor, Tensor, Tensor]]
              ) -> dict[float, float]:
        scores: dict[float, float] = {}
        warm: list[tuple[Tensor, Tensor] | None] = [None] * len(tasks)
        for c in sorted(self.c_grid):
            accs = []
            for i, (xt, yt, xv, yv) in enumerate(tasks):
                w, b = fit_logistic(xt, yt, self.n_classes_, c, self.max_iter, warm[i])
                warm[i] = (w, b)
                accs.append(float(((xv @ w + b).argmax(1) == yv).float().mean()))
            scores[c] = sum(accs) / len(accs)
        return scores

    def decision_function(self, x: Tensor) -> Tensor:
        return self.scaler_(x) @ self.w_ + self.b_

    def predict(self, x: Tensor) -> Tensor:
        return self.decision_function(x).argmax(dim=1)

    def score(self, x: Tensor, y: Tensor) -> float:
        return float((self.predict(x) == y.long()).float().mean())
