"""Claim: on MNIST, an autoencoder trained on nine digits flags the tenth (mean AUROC >= 0.90).

Leave-one-class-out protocol, once per digit c: an autoencoder is pretrained on the training
images of every other digit (the training split minus a seeded 10% validation split; labels are
used only to leave c out). Each test image then gets anomaly scores, and AUROC measures how well
each score separates the digit-c test images (anomalies) from the others (normal):

- ``recon``: per-image reconstruction error;
- ``gaussian``, ``gmm``: negative log-density of the code under a Gaussian / a 10-component
  Gaussian mixture fitted on the normal training codes;
- ``knn``, ``knn-cosine``: mean distance of the code to its 5 nearest normal training codes
  (Euclidean, or cosine).

One score is reported as aevision's: the one with the best mean AUROC on the validation split
(training-set images of all ten digits, none of which the models trained on). The test split is
used once, for the numbers reported; AUROC is computed with torchmetrics.

    AEVISION_DATA=/work/shared/datasets python bench/anomaly.py
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # no spinning threads on a shared machine

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

import common
from aevision.api import encode
from aevision.config import DataConfig
from aevision.data import Splits, load_dataset
from aevision.tasks.anomaly import CodeDensity, auroc, reconstruction_error
from aevision.tasks.retrieval import set_threads

MODEL: dict[str, Any] = {"name": "dense", "hidden": [512], "code_dim": 32}
DENSITIES: dict[str, dict[str, Any]] = {
    "gaussian": {"kind": "gaussian"},
    "gmm": {"kind": "gmm", "components": 10, "covariance": "full"},
    "knn": {"kind": "knn", "k": 5, "metric": "l2"},
    "knn-cosine": {"kind": "knn", "k": 5, "metric": "cosine"},
}
SCORES = ("recon", *DENSITIES)


def parse_args() -> argparse.Namespace:
    p = common.parser(__doc__, "anomaly.json", data=True, runs="runs/bench-anomaly")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--classes", type=int, nargs="+", default=list(range(10)))
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    return p.parse_args()


def without(splits: Splits, held_out: int) -> Splits:
    """The training and validation images of every class but ``held_out`` (for pretraining)."""
    def keep(s: Any) -> Any:
        return s.subset(torch.nonzero(s.labels != held_out).flatten())

    return Splits(train=keep(splits.train), val=keep(splits.val), test=splits.test)


def one_class(held_out: int, splits: Splits, args: argparse.Namespace) -> dict[str, Any]:
    normal = without(splits, held_out)
    out = Path(args.runs) / f"without-{held_out}"
    config = {"seed": args.seed, "output_dir": str(out),
              "data": {"name": args.dataset, "root": args.data_root}, "model": MODEL,
              "train": {"epochs": args.epochs, "batch_size": 128, "lr": 1e-3, "progress": False}}
    model, fit = common.pretrained(config, normal, args.reuse, ("epochs", "val_recon", "train_seconds"))
    train_s = fit.pop("train_seconds")

    started = time.time()
    ref = encode(model, normal.train)
    fitted = {name: CodeDensity(seed=args.seed, **options).fit(ref) for name, options in DENSITIES.items()}
    auc: dict[str, dict[str, float]] = {}
    for split in ("val", "test"):
        data = getattr(splits, split)
        y = (data.labels == held_out).long()
        codes = encode(model, data)
        scores = {"recon": reconstruction_error(model, data),
                  **{name: density.score(codes) for name, density in fitted.items()}}
        auc[split] = {name: round(auroc(s, y), 4) for name, s in scores.items()}
    result = {"auroc": auc, "train_seconds": round(train_s, 1),
              "score_seconds": round(time.time() - started, 1),
              "normal_train_images": len(normal.train), "fit": fit}
    print(f"held out {held_out}: test AUROC " + ", ".join(f"{k} {v:.3f}" for k, v in auc["test"].items())
          + f" ({result['train_seconds']:.0f}s training)", file=sys.stderr, flush=True)
    return result


def report(args: argparse.Namespace, per_class: dict[int, dict[str, Any]], started: float) -> dict[str, Any]:
    """The claim's numbers: the score with the best mean validation AUROC, and its test AUROC."""
    def mean(split: str, score: str) -> float:
        return round(statistics.fmean(r["auroc"][split][score] for r in per_class.values()), 4)

    val_means = {s: mean("val", s) for s in SCORES}
    test_means = {s: mean("test", s) for s in SCORES}
    chosen = max(val_means, key=lambda s: val_means[s])
    return {
        "claim": "mean leave-one-class-out AUROC on MNIST >= 0.90",
        "command": common.command("anomaly.py", data=True),
        "mean_auroc": test_means[chosen],
        "per_class_auroc": {str(c): r["auroc"]["test"][chosen] for c, r in per_class.items()},
        "score": chosen,
        "target_met": test_means[chosen] >= 0.90,
        "mean_auroc_by_score": {"test": test_means, "val": val_means},
        "per_class": {str(c): r for c, r in per_class.items()},
        "protocol": {
            "dataset": args.dataset,
            "normal": "every class but the held-out one (training split minus a seeded 10% validation split)",
            "anomaly": "the held-out class", "evaluation": "all test images; AUROC (torchmetrics)",
            "selection": "score with the best mean validation AUROC (validation split of the training "
                         "set, all classes, never trained on); test used once",
        },
        "config": {"model": MODEL, "densities": DENSITIES, "epochs": args.epochs, "batch_size": 128,
                   "lr": 1e-3, "seed": args.seed, "threads": args.threads, "classes": args.classes},
        **common.provenance(started, f"{common.SHARED}; times are upper bounds", load_average=True),
    }


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    set_threads(args.threads)
    started = time.time()
    splits = load_dataset(DataConfig(name=args.dataset, root=args.data_root), args.seed)
    per_class = {c: one_class(c, splits, args) for c in args.classes}
    common.publish(args.out, report(args, per_class, started), indent=2)


if __name__ == "__main__":
    main()
