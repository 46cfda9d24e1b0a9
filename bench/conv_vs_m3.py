#!/usr/bin/env python
"""Claim: the default ``conv`` autoencoder's features are at least as good as M3's under the same
linear probe, at >= 10x M3's training throughput.

M3 is the source documents' CIFAR conv autoencoder (decoder fixed to output 32x32), which spends
most of its FLOPs in a 67M-parameter dense layer. Both models train on the same engine, same data,
same epochs and batch size; images/s is the median of timed epochs (epoch 1 is warm-up). The probe
is the library's linear probe (standardised features; C chosen on the validation split) on the
frozen code, and for ``conv`` also on its stage maps pooled to 4x4 or 8x8 by averaging or by
maximum (``features: {source: stages, pool: 4, pool_op: max}`` etc., the conv analogues of M3's
4096-wide code); the feature kind reported for each model is the one with the best validation
accuracy. Accuracy is on the test split, used once for the chosen kind (the others' test
accuracies are written beside it, for the record, not for choosing).

Data: ``shapes`` (generated 32x32 RGB shapes over textured backgrounds, labelled by kind). CIFAR-10
is the documents' dataset but cannot be downloaded on these offline machines; ``shapes`` has the
same image format and needs no download.

    python bench/conv_vs_m3.py [--epochs 10] [--n-train 4000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

THREADS = 2
for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(var, str(THREADS))

import torch  # noqa: E402

import common  # noqa: E402
from aevision.config import TrainConfig, build_config  # noqa: E402
from aevision.data import Splits, load_dataset  # noqa: E402
from aevision.data.batches import TensorBatches  # noqa: E402
from aevision.engine import Trainer, seed_everything  # noqa: E402
from aevision.models import Autoencoder, build_model  # noqa: E402
from aevision.tasks.features import FeatureConfig, FeatureEncoder, extract  # noqa: E402
from aevision.tasks.probe import LinearProbe  # noqa: E402
from throughput import m3_parts  # noqa: E402


def train_and_probe(name: str, model: Autoencoder, splits, args: argparse.Namespace, tmp: Path) -> dict:
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch, lr=1e-3, accelerator="cpu", progress=False)
    batches = TensorBatches(splits.train.images, args.batch, seed=args.seed, shuffle=True, drop_last=True)
    fit = Trainer(cfg, tmp / name, seed=args.seed).fit(model, batches, None)
    seconds = [h["train_seconds"] for h in fit.history]
    n = len(batches) * args.batch
    model.eval()
    kinds = {"code": FeatureConfig()}
    if hasattr(model.encoder, "forward_features"):
        for op in ("avg", "max"):
            for grid in (4, 8):
                kinds[f"stages_{op}pool{grid}"] = FeatureConfig(source="stages", pool=grid, pool_op=op)
    probes = {}
    for kind, fcfg in kinds.items():
        fe = FeatureEncoder(model, fcfg)
        feats = {k: extract(fe, getattr(splits, k)) for k in ("train", "val", "test")}
        probe = LinearProbe(seed=args.seed).fit(feats["train"], splits.train.labels, feats["val"],
                                                splits.val.labels)
        probes[kind] = {"val_accuracy": round(max(probe.selection_.values()), 4), "C": probe.c_,
                        "dim": int(feats["train"].shape[1]),
                        "test_accuracy": round(probe.score(feats["test"], splits.test.labels), 4)}
    chosen = max(probes, key=lambda k: probes[k]["val_accuracy"])  # validation decides, not test
    return {
        "images_per_s": round(n / statistics.median(seconds[1:]), 1),
        "linear_probe_test_accuracy": probes[chosen]["test_accuracy"],
        "features": chosen,
        "probes": probes,
        "parameters": sum(p.numel() for p in model.parameters()),
        "final_train_loss": round(fit.history[-1]["train_loss"], 5),
    }


def compare(splits: Splits, a: argparse.Namespace) -> dict:
    """M3 and conv trained and probed alike, and the claim's two ratios."""
    result: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("M3", "conv"):
            seed_everything(a.seed)
            model = Autoencoder(m3_parts(), (3, 32, 32)) if name == "M3" else build_model("conv", (3, 32, 32))
            result[name] = train_and_probe(name, model, splits, a, Path(tmp))
            print(json.dumps({name: result[name]}), file=sys.stderr)
    m3, conv = result["M3"], result["conv"]
    result["throughput_ratio_conv_vs_m3"] = round(conv["images_per_s"] / m3["images_per_s"], 2)
    result["accuracy_difference_conv_minus_m3"] = round(
        conv["linear_probe_test_accuracy"] - m3["linear_probe_test_accuracy"], 4)
    result["targets"] = {
        "conv_accuracy_at_least_m3": conv["linear_probe_test_accuracy"] >= m3["linear_probe_test_accuracy"],
        "conv_throughput_at_least_10x": result["throughput_ratio_conv_vs_m3"] >= 10,
    }
    return result


def main() -> None:
    ap = common.parser(__doc__, "conv_vs_m3.json")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--n-train", type=int, default=4000)
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(THREADS)
    started = time.time()
    cfg = build_config(overrides=["data.name=shapes", f"data.n_train={a.n_train}", f"data.n_test={a.n_test}",
                                  "data.size=32", f"seed={a.seed}"])
    splits = load_dataset(cfg.data, a.seed)
    result = compare(splits, a)
    result.update({
        "data": {"name": "shapes", "n_train": len(splits.train), "n_val": len(splits.val),
                 "n_test": len(splits.test), "size": 32},
        "config": {"epochs": a.epochs, "batch": a.batch, "lr": 1e-3, "seed": a.seed, "threads": THREADS},
        "command": common.command("conv_vs_m3.py"),
        **common.provenance(started),
    })
    common.publish(a.out, result)


if __name__ == "__main__":
    main()
