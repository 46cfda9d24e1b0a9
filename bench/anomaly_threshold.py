"""Claim: a threshold calibrated on normal MNIST images only keeps its false-positive rate.

One-class protocol, once per digit c (c is the only normal class): the training images of c (the
training split minus pretrain's seeded 10% validation split) are split in two, seeded: an
autoencoder is pretrained on one part (validated on c's validation images), and the other part,
never trained on, calibrates the anomaly threshold with ``aevision.tasks.anomaly_report.calibrate``
(split conformal: the ceil((n+1)(1-fpr))-th smallest reconstruction error of the n calibration
images), which stores it beside the model. ``score_images`` then labels the test images with the
stored threshold:

- ``fpr``: the fraction of c's test images (normal, never seen) flagged anomalous; the claim is
  that it lies within [0.03, 0.07] for a target of 0.05 in every run;
- ``detection_rate``: the fraction of the other digits' test images flagged (reported, no target).

No anomaly is used to set anything: labels only pick the normal class's images.

    AEVISION_DATA=/work/shared/datasets python bench/anomaly_threshold.py
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
from aevision.config import DataConfig
from aevision.data import Splits, load_dataset
from aevision.data.splits import permutation
from aevision.tasks.anomaly import auroc
from aevision.tasks.anomaly_report import calibrate, score_images

MODEL: dict[str, Any] = {"name": "dense", "hidden": [256], "code_dim": 16}
BAND = (0.03, 0.07)  # where every run's test false-positive rate must fall for a target of 0.05


def parse_args() -> argparse.Namespace:
    p = common.parser(__doc__, "anomaly_threshold.json", data=True, runs="runs/bench-anomaly-threshold")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--classes", type=int, nargs="+", default=list(range(10)))
    p.add_argument("--fpr", type=float, default=0.05, help="the target false-positive rate")
    p.add_argument("--calibration-fraction", type=float, default=0.5,
                   help="of the normal class's training images, held out for calibration")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args()


def normal_parts(splits: Splits, c: int, fraction: float, seed: int) -> tuple[Splits, Any]:
    """(what the model of class ``c`` trains on, the images that calibrate it): c's training
    images split by a seeded permutation, c's validation images for pretraining's validation."""
    def of_c(s: Any) -> Any:
        return s.subset(torch.nonzero(s.labels == c).flatten())

    train = of_c(splits.train)
    order = permutation(len(train), seed, 97 + c)
    n_cal = round(fraction * len(train))
    return Splits(train=train.subset(order[n_cal:]), val=of_c(splits.val), test=None), \
        train.subset(order[:n_cal])


def one_class(c: int, splits: Splits, args: argparse.Namespace) -> dict[str, Any]:
    fit_on, cal = normal_parts(splits, c, args.calibration_fraction, args.seed)
    out = Path(args.runs) / f"normal-{c}"
    config = {"seed": args.seed, "output_dir": str(out),
              "data": {"name": args.dataset, "root": args.data_root}, "model": MODEL,
              "train": {"epochs": args.epochs, "batch_size": 128, "lr": 1e-3, "progress": False}}
    model, fit = common.pretrained(config, fit_on, args.reuse, ("epochs", "val_recon", "train_seconds"))
    found = calibrate(model, out, cal, fpr=args.fpr, source=f"{len(cal)} held-out training images of {c}")
    test = splits.test
    assert test is not None
    scored = score_images(model, out, test)  # labelled with the threshold stored beside the model
    assert scored.threshold == found.threshold
    flagged, normal = found.flags(scored.scores).bool(), test.labels == c
    result = {"normal_class": c, "fpr": round(float(flagged[normal].float().mean()), 4),
              "detection_rate": round(float(flagged[~normal].float().mean()), 4),
              "threshold": found.threshold, "calibration_images": found.calibration_images,
              "rank": found.rank, "training_images": len(fit_on.train),
              "normal_test_images": int(normal.sum()), "anomalous_test_images": int((~normal).sum()),
              "auroc": round(auroc(scored.scores, (~normal).long()), 4), "fit": fit}
    print(f"normal {c}: test FPR {result['fpr']:.4f}, detection {result['detection_rate']:.4f} "
          f"({fit['train_seconds']:.0f}s training)", file=sys.stderr, flush=True)
    return result


def report(args: argparse.Namespace, runs: list[dict[str, Any]], started: float) -> dict[str, Any]:
    fprs = [r["fpr"] for r in runs]
    return {
        "claim": f"test false-positive rate within [{BAND[0]}, {BAND[1]}] for target 0.05 in every run",
        "command": common.command("anomaly_threshold.py", data=True),
        "target_fpr": args.fpr,
        "within_band": all(BAND[0] <= f <= BAND[1] for f in fprs),
        "fpr": common.mean_std(fprs),
        "mean_detection_rate": round(statistics.fmean(r["detection_rate"] for r in runs), 4),
        "runs": runs,
        "protocol": {
            "dataset": args.dataset, "score": "recon (per-image mean reconstruction error)",
            "normal": "one digit; its training images (minus the 10% validation split) split in two, "
                      f"seeded: {1 - args.calibration_fraction:g} to train, {args.calibration_fraction:g} "
                      "to calibrate",
            "threshold": "split conformal on the calibration images (tasks/calibration.py), stored with "
                         "the model and read back by score_images",
            "evaluation": "fpr: flagged fraction of the normal digit's test images; detection_rate: "
                          "flagged fraction of the other digits' test images",
        },
        "config": {"model": MODEL, "epochs": args.epochs, "batch_size": 128, "lr": 1e-3, "seed": args.seed,
                   "threads": args.threads, "classes": args.classes},
        **common.provenance(started, f"{common.SHARED}; times are upper bounds", load_average=True),
    }


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    started = time.time()
    splits = load_dataset(DataConfig(name=args.dataset, root=args.data_root), args.seed)
    runs = [one_class(c, splits, args) for c in args.classes]
    common.publish(args.out, report(args, runs, started), indent=2)


if __name__ == "__main__":
    main()
