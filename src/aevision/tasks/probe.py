"""Linear probe: how linearly separable are the features? The standard test of a representation.

Multinomial logistic regression on standardised features, fitted full-batch with L-BFGS in torch
(60k x 1k features in seconds on two cores). The L2 strength C is chosen from ``c_grid`` on
held-out data only: a validation split when there is one, else stratified cross-validation inside
the labelled set (the honest choice when labels are few). The test set is never seen while
choosing. A grid of one value is the choice. When nothing can be held out (no validation data and
a class with a single label), the rule is the grid's value nearest C = 1 (scikit-learn's default)
on a log scale. The final fit uses every training label at the chosen C.

The default grid spans 1e-5 .. 1e3: high-dimensional inputs (raw pixels of colour images) want
much stronger regularisation than compact codes. ``edge_`` says when the held-out score still
rose toward an end of the grid, where a wider grid might do better.

For imbalanced training sets, ``class_weight`` (see :func:`aevision.tasks.losses.class_weights`)
weighs each sample's log-loss by its class, and ``metric="balanced_accuracy"`` makes the choice
of C reward every class equally.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from aevision.data.splits import permutation
from aevision.errors import ConfigError
from aevision.tasks.losses import class_weights
from aevision.tasks.metrics import balanced_accuracy

DEFAULT_C_GRID = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)
# below this many multiply-adds per evaluation (n x d x k) one thread is faster: the work per op
# is too small to pay for waking a second one, and on a busy machine every op would wait for it
SMALL_PROBLEM = 4_000_000


@contextmanager
def _threads_for(work: int) -> Iterator[None]:
    before = torch.get_num_threads()
    if work < SMALL_PROBLEM and before > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# how a probe scales its features: each on its own ("feature") or all by one scale ("global")
Scaling = Literal["feature", "global"]


@dataclass
class Standardizer:
    """Feature-wise (x - mean) / std, statistics from training features only. ``per_feature=False``
    divides every feature by one scale (the root mean variance): for coordinates whose relative
    variances carry the signal, as PCA components do (per-feature scaling would whiten them and
    lift the noisiest directions to the weight of the first)."""

    mean: Tensor
    std: Tensor

    @classmethod
    def fit(cls, x: Tensor, per_feature: bool = True) -> Standardizer:
        # float64 for the sums, a slice of columns at a time (no double copy of a 1 GB matrix)
        means, stds = [], []
        for cols in x.split(256, dim=1):
            cd = cols.double()
            stds.append(cd.std(dim=0, unbiased=False))
            means.append(cd.mean(dim=0))
        std, mean = torch.cat(stds), torch.cat(means)
        if not per_feature:
            std = std.square().mean().sqrt().expand_as(std)
        return cls(mean.float(), torch.where(std > 1e-8, std, torch.ones_like(std)).float())

    def __call__(self, x: Tensor) -> Tensor:
        out = x.float() - self.mean  # a new tensor: divided in place, one copy of x at a time (the
        return out.div_(self.std)  # patches model's 45,000 x 6,400 features: 1.15 GB each)


def fit_logistic(x: Tensor, y: Tensor, n_classes: int, c: float, max_iter: int = 200,
                 init: tuple[Tensor, Tensor] | None = None,
                 class_weight: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Weights (D, K) and bias (K,) minimising mean CE + ||W||^2 / (2 C n), sklearn's objective.

    With ``class_weight`` (averaging 1 per sample, as :func:`class_weights` makes them) the mean
    is the weighted mean, which is again sklearn's objective with ``class_weight`` divided by C n.
    """
    (w,), (b,) = fit_logistic_batch([x], [y], n_classes, c, max_iter,
                                    None if init is None else ([init[0]], [init[1]]), [class_weight])
    return w, b


def fit_logistic_batch(xs: Sequence[Tensor], ys: Sequence[Tensor], n_classes: int, c: float,
                       max_iter: int = 200,
                       init: tuple[Sequence[Tensor], Sequence[Tensor]] | None = None,
                       class_weights: Sequence[Tensor | None] | None = None,
                       ) -> tuple[list[Tensor], list[Tensor]]:
    """:func:`fit_logistic` on P independent problems (cross-validation folds) at once.

    The problems are stacked (padded with zero-weight rows) and their objectives summed, so one
    L-BFGS run with batched matrix products replaces P runs; on the small problems of label-scarce
    cross-validation the Python overhead of the optimiser, not the arithmetic, is the cost.

    The gradient is written out (``G = (softmax - onehot) * a``, ``dW = X^T G``) instead of taken
    by autograd, for speed: autograd forms ``X^T G`` as a product with a thin (N, K) right-hand
    side, which BLAS runs ~30x slower than the same numbers as ``(G^T X)^T``; at 60k x 3k features
    that is the difference between one and thirty seconds per evaluation.
    """
    p, d = len(xs), xs[0].shape[1]
    n_max = max(len(x) for x in xs)
    x = torch.zeros(p, n_max, d) if p > 1 else xs[0].float().unsqueeze(0)
    onehot = torch.zeros(p, n_classes, n_max)
    a = torch.zeros(p, 1, n_max)  # per-sample weight, each problem's weights sum to 1
    l2 = torch.zeros(p, 1, 1)
    for i, (xi, yi) in enumerate(zip(xs, ys, strict=True)):
        n, yi = len(yi), yi.long()
        if p > 1:
            x[i, :n] = xi
        onehot[i, yi, torch.arange(n)] = 1.0
        cw = class_weights[i] if class_weights is not None else None
        ai = cw.float()[yi] if cw is not None else torch.ones(n)
        a[i, 0, :n] = ai / ai.sum()
        l2[i] = 1.0 / (c * n)
    w = torch.stack(list(init[0])).clone() if init else torch.zeros(p, d, n_classes)
    b = torch.stack(list(init[1])).clone() if init else torch.zeros(p, n_classes)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=20,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-6,
                            tolerance_change=1e-10)

    def closure() -> Tensor:
        logits_t = torch.baddbmm(b.unsqueeze(2), w.transpose(1, 2), x.transpose(1, 2))  # (P, K, N)
        logp = logits_t.log_softmax(dim=1)
        loss = -(logp * onehot).sum(1, keepdim=True).mul(a).sum() + 0.5 * (l2 * w.pow(2)).sum()
        g_t = (logp.exp() - onehot) * a  # (P, K, N)
        w.grad = (torch.bmm(g_t, x).transpose(1, 2) + l2 * w).contiguous()
        b.grad = g_t.sum(2)
        return loss

    with torch.no_grad(), _threads_for(p * n_max * d * n_classes):
        opt.step(closure)
    return list(w.unbind(0)), list(b.unbind(0))


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
    class_weight: str | Sequence[float] = "none"  # "none", "inverse", "effective" or K weights
    metric: Literal["accuracy", "balanced_accuracy"] = "accuracy"  # what chooses C
    standardize: Scaling = "feature"  # global: one scale (see Standardizer)
    c_: float = field(init=False, default=float("nan"))
    selection_: dict[float, float] = field(init=False, default_factory=dict)
    chosen_by_: str = field(init=False, default="")

    def fit(self, x: Tensor, y: Tensor, x_val: Tensor | None = None, y_val: Tensor | None = None,
            scaler_data: Tensor | None = None, n_classes: int | None = None) -> LinearProbe:
        """``scaler_data``: features to take standardisation statistics from (e.g. all unlabelled
        training features; default ``x``). Validation labels choose C, nothing else."""
        y = y.long()
        if not self.c_grid or any(c <= 0 for c in self.c_grid):
            raise ConfigError("linear.c_grid", list(self.c_grid), "a non-empty list of numbers > 0")
        if self.metric not in ("accuracy", "balanced_accuracy"):
            raise ConfigError("linear.metric", self.metric, "'accuracy' or 'balanced_accuracy'")
        self.n_classes_ = int(n_classes or (int(y.max()) + 1))
        if self.standardize not in ("feature", "global"):
            raise ConfigError("linear.standardize", self.standardize, "'feature' or 'global'")
        self.scaler_ = Standardizer.fit(scaler_data if scaler_data is not None else x,
                                        per_feature=self.standardize == "feature")
        xs = self.scaler_(x)
        val = None
        if x_val is not None and y_val is not None and len(y_val):
            val = (self.scaler_(x_val), y_val.long())
        self.selection_, self.chosen_by_ = self._select(xs, y, val)
        scored = {c: s for c, s in self.selection_.items() if not math.isnan(s)}
        best = max(scored.values(), default=None)
        # the strongest regularisation among the best scores: the safest choice on ties
        self.c_ = min(c for c, s in scored.items() if s == best) if scored else next(iter(self.selection_))
        fitted = getattr(self, "_fits", {}).get(self.c_)
        self.w_, self.b_ = fitted if fitted is not None else fit_logistic(
            xs, y, self.n_classes_, self.c_, self.max_iter, class_weight=self._weights(y))
        self._fits = {}
        return self

    def _select(self, xs: Tensor, y: Tensor, val: tuple[Tensor, Tensor] | None
                ) -> tuple[dict[float, float], str]:
        """The held-out score of each C (NaN: none) and how C is chosen (see the module's rules)."""
        grid = sorted(self.c_grid)
        if len(grid) == 1:  # nothing to choose; scored on validation data when there is some
            return (self._path(xs, y, [(xs, y, *val)]) if val else {grid[0]: math.nan},
                    "the only value in the grid")
        if val is not None:
            return self._path(xs, y, [(xs, y, *val)]), "validation split"
        counts = torch.bincount(y, minlength=self.n_classes_)
        k = min(self.folds, int(counts[counts > 0].min()))
        if k < 2:
            return ({min(grid, key=lambda c: abs(math.log10(c))): math.nan},
                    "default: the grid value nearest C=1 (a class has a single label: nothing to "
                    "validate on)")
        splits = stratified_folds(y, k, self.seed)
        tasks = []
        for i in range(k):
            mask = torch.ones(len(y), dtype=torch.bool)
            mask[splits[i]] = False
            tasks.append((xs[mask], y[mask], xs[splits[i]], y[splits[i]]))
        return self._path(xs, y, tasks), f"{k}-fold CV in the training labels"

    @property
    def edge_(self) -> str | None:
        """``"lowest"`` / ``"highest"`` when held-out scores chose C at that end of a grid of
        several values and no other C scored as well (the best may lie beyond the grid), else None."""
        grid = sorted(self.c_grid)
        scored = {c: s for c, s in self.selection_.items() if not math.isnan(s)}
        if len(grid) < 2 or len(scored) < 2 or self.c_ not in (grid[0], grid[-1]):
            return None
        if sum(s == scored[self.c_] for s in scored.values()) > 1:
            return None
        return "lowest" if self.c_ == grid[0] else "highest"

    def _weights(self, y: Tensor) -> Tensor | None:
        counts = torch.bincount(y, minlength=self.n_classes_)
        return class_weights(counts, self.class_weight, field="linear.class_weight")

    def _score(self, pred: Tensor, y: Tensor) -> float:
        if self.metric == "balanced_accuracy":
            return balanced_accuracy(pred, y, self.n_classes_)
        return float((pred == y).float().mean())

    def _path(self, xs: Tensor, y: Tensor, tasks: list[tuple[Tensor, Tensor, Tensor, Tensor]]
              ) -> dict[float, float]:
        """Mean held-out score of each C; the folds of one C are fitted together, each C
        warm-started from the previous one (strong to weak regularisation: each fit starts close
        to its solution). With a validation split the task *is* the final fit, so its solutions
        are kept for :meth:`fit` to reuse."""
        self._fits: dict[float, tuple[Tensor, Tensor]] = {}
        scores: dict[float, float] = {}
        warm: tuple[list[Tensor], list[Tensor]] | None = None
        weights = [self._weights(yt) for _, yt, _, _ in tasks]
        for c in sorted(self.c_grid):
            warm = fit_logistic_batch([t[0] for t in tasks], [t[1] for t in tasks], self.n_classes_,
                                      c, self.max_iter, warm, weights)
            accs = [self._score((xv @ w + b).argmax(1), yv)
                    for (_, _, xv, yv), w, b in zip(tasks, *warm, strict=True)]
            scores[c] = sum(accs) / len(accs)
            if len(tasks) == 1 and tasks[0][0] is xs:
                self._fits[c] = (warm[0][0], warm[1][0])
        return scores

    def decision_function(self, x: Tensor) -> Tensor:
        return self.scaler_(x) @ self.w_ + self.b_

    def predict(self, x: Tensor) -> Tensor:
        return self.decision_function(x).argmax(dim=1)

    def score(self, x: Tensor, y: Tensor) -> float:
        return float((self.predict(x) == y.long()).float().mean())
