"""Trial: how well one model of a benchmark preset probes on the validation split, against its
untrained twin. Never the test split: this is how a preset's models are chosen.

A preset's model entry (as changed by the overrides) is pretrained on the preset's training split,
then its features and those of the same encoder with the random weights its pretraining started
from go through the preset's linear probe, C chosen on the validation split; the result is that
validation accuracy. The test images are loaded with the dataset but never encoded.

    python bench/probe_trial.py cifar10 conv-rgb "datasets=[{name: folder:$AEVISION_DATA/cifar10-jpeg}]" \\
        "models.conv-rgb.model.channels=[128, 256]" --out bench/results/trials/probe_cifar10_wide.json
"""

from __future__ import annotations

import copy
import resource
import time
from typing import Any

import common
from aevision.benchmark.config import BenchmarkConfig
from aevision.benchmark.protocols import linear
from aevision.config import to_dict
from aevision.data import Splits
from aevision.models import Autoencoder
from aevision.tasks.features import FeatureEncoder, extract


def validation_probe(cfg: BenchmarkConfig, name: str, model: Autoencoder, splits: Splits) -> dict[str, Any]:
    """The benchmark's linear probe (:func:`aevision.benchmark.protocols.linear`) on ``model``'s
    features, C chosen on the validation split: its accuracy there, the C chosen and the score of
    every C in the grid."""
    fe = FeatureEncoder(model, copy.deepcopy(cfg.model_features(name)), f"models.{name}.features")
    started = time.perf_counter()
    train, val = extract(fe, splits.train), extract(fe, splits.val)  # type: ignore[arg-type]
    chosen = linear((train, splits.train.labels), (val, splits.val.labels), val,  # type: ignore[union-attr]
                    cfg.protocols.linear, n_classes=splits.train.num_classes, seed=cfg.seed).selection
    return {"val_accuracy": round(chosen["val_score"], 4), "C": chosen["C"], "feature_dim": fe.dim,
            "scores": {c: round(s, 4) for c, s in chosen["scores"].items()},
            "at_edge": chosen["at_edge"], "seconds": round(time.perf_counter() - started, 1)}


def trial(cfg: BenchmarkConfig, name: str, runs: str, reuse: bool) -> dict[str, Any]:
    """Pretrain ``name`` (in ``runs``; read back with ``reuse``) and probe it and its untrained twin."""
    splits, model, untrained, pretraining = common.preset_model(cfg, name, runs, reuse, "probe_trial")
    data_cfg = cfg.datasets[0]
    return {"model": name, "dataset": data_cfg.name, "train": len(splits.train),
            "val": len(splits.val),
            "trained": validation_probe(cfg, name, model, splits),
            "untrained": validation_probe(cfg, name, untrained, splits),
            "pretraining": pretraining, "entry": cfg.models[name]}


def main() -> None:
    args, cfg = common.trial_setup(__doc__, "trials/probe_trial.json")
    started = time.time()
    result = {"question": f"{args.model}'s linear probe on {args.preset}'s validation split vs its "
                          "untrained twin (test never scored)",
              "command": common.command("probe_trial.py", data=True),
              **trial(cfg, args.model, args.runs, args.reuse),
              "protocol": {"linear": to_dict(cfg.protocols.linear),
                           "features": to_dict(cfg.model_features(args.model))},
              "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
              **common.provenance(started, common.SHARED, load_average=True)}
    common.publish(args.out, result, indent=1, default=str)


if __name__ == "__main__":
    main()
