"""The evaluation protocols as functions that cannot see test labels.

Each protocol gets labelled training data, optional labelled validation data, and the *images or
features* of the test split, and returns predictions. Test labels are not an argument: scoring
happens afterwards, in the runner, so nothing a protocol chooses (C, the fine-tuning epoch) can
depend on them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from torch import Tensor

from aevision.benchmark.config import FinetuneProtocol, KNNProtocol, LinearProtocol
from aevision.data.imageset import ImageSet
from aevision.tasks.features import FeatureEncoder
from aevision.tasks.finetune import finetune
from aevision.tasks.knn import KNNClassifier
from aevision.tasks.probe import LinearProbe, Scaling


@dataclass
class Outcome:
    """Test predictions, what was chosen on held-out training data, and what it cost."""

    pred: Tensor
    selection: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0  # fit + predict, wall clock
    images: int = 0  # images processed: training passes + test predictions (for images/s)
    history: list[dict[str, Any]] = field(default_factory=list)
    reused: bool = False  # read back from an earlier benchmark run, not run now


def linear(train: tuple[Tensor, Tensor], val: tuple[Tensor, Tensor] | None, test_features: Tensor,
           cfg: LinearProtocol, *, n_classes: int, seed: int, scaler_data: Tensor | None = None,
           class_weight: str | list[float] = "none", metric: str = "accuracy",
           standardize: Scaling = "feature") -> Outcome:
    """Linear probe. ``val`` chooses C when given, else cross-validation inside ``train`` (the rules:
    :mod:`aevision.tasks.probe`). The selection records how C was chosen, the grid's ends and
    ``at_edge`` (``"lowest"`` / ``"highest"`` when the choice sits at an end: widen the grid).
    ``standardize``: the features' scaling (``"global"`` for PCA coordinates, see
    :class:`~aevision.tasks.probe.Standardizer`)."""
    started = time.perf_counter()
    probe = LinearProbe(c_grid=tuple(cfg.c_grid), max_iter=cfg.max_iter, folds=cfg.folds, seed=seed,
                        class_weight=class_weight, metric=metric,  # type: ignore[arg-type]
                        standardize=standardize)
    x, y = train
    probe.fit(x, y, *(val if val is not None else (None, None)), scaler_data=scaler_data,
              n_classes=n_classes)
    pred = probe.predict(test_features)
    # the held-out score at the chosen C: what may rank models without touching test
    val_score = probe.selection_.get(probe.c_, float("nan"))
    return Outcome(pred, {"C": probe.c_, "chosen_by": probe.chosen_by_, "metric": metric,
                          "val_score": None if val_score != val_score else val_score,
                          "scores": {f"{c:g}": s for c, s in probe.selection_.items()},
                          "grid": [min(probe.c_grid), max(probe.c_grid)], "at_edge": probe.edge_},
                   time.perf_counter() - started, len(y) + len(test_features))


def knn(train: tuple[Tensor, Tensor], test_features: Tensor, cfg: KNNProtocol, *,
        n_classes: int) -> Outcome:
    started = time.perf_counter()
    clf = KNNClassifier(k=cfg.k, weights=cfg.weights, temperature=cfg.temperature)
    pred = clf.fit(*train, n_classes=n_classes).predict(test_features)
    return Outcome(pred, {"k": min(cfg.k, len(train[1])), "weights": cfg.weights},
                   time.perf_counter() - started, len(train[1]) + len(test_features))


def finetune_protocol(features: FeatureEncoder, train: ImageSet, val: ImageSet | None,
                      test_images: Tensor, cfg: FinetuneProtocol, out_dir: Path, *, n_classes: int,
                      seed: int, progress: bool = False, resume: bool = False) -> Outcome:
    """Fine-tune ``features`` + a head; ``val`` (labelled) picks the epoch when given; ``resume``:
    an identical fine-tune killed in ``out_dir`` continues from its checkpoint."""
    if cfg.min_epoch_images and len(train) < cfg.min_epoch_images:
        reps = -(-cfg.min_epoch_images // len(train))
        train = ImageSet(train.images.repeat(reps, 1, 1, 1), train.labels.repeat(reps),  # type: ignore[union-attr]
                         train.classes, train.name)
    # the recipe alone: which budgets and seeds the protocol covers is no part of this run
    run_cfg = replace(cfg.recipe(), train=replace(cfg.train, progress=progress))
    result = finetune(features, train, val, run_cfg, out_dir, n_classes=n_classes, seed=seed, resume=resume)
    trained = time.perf_counter()
    pred = result.classifier.predict(test_images)
    selection: dict[str, Any] = {
        "best_epoch": result.best_epoch, "epochs": len(result.history),
        "chosen_by": "validation loss" if val is not None else "last epoch (no labels outside the budget)"}
    if val is not None and val.labels is not None:
        selection["val_score"] = float((result.classifier.predict(val) == val.labels).float().mean())
    # a resumed fine-tune's training time is that of all its epochs, not this process's share
    seconds = result.train_seconds + time.perf_counter() - trained
    return Outcome(pred, selection, seconds, result.images_seen + len(test_images), result.history)

