"""``aevision demo``: the benchmark's ``quick`` preset, offline, on the embedded digits."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "demo", help="pretrain several autoencoders on digits and compare their features with "
        "pixels, PCA and supervised training (offline, a few minutes at most)",
        description="The 'quick' benchmark preset: linear probe, kNN and fine-tuning at several "
        "label budgets, an imbalanced-training comparison, a leaderboard and plots.")
    p.add_argument("-o", "--out", default="runs/demo", metavar="DIR", help="default runs/demo")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, help="pretraining epochs per model (preset: 60)")
    p.add_argument("--seeds", type=int, help="label-subset seeds to average over (preset: 3)")
    p.add_argument("--finetune-epochs", type=int, help="fine-tuning epochs (preset: 20)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from aevision.cli.common import positive
    from aevision.demo import run_demo

    positive(args, "--epochs", "--seeds", "--finetune-epochs")
    run_demo(args.out, seed=args.seed, epochs=args.epochs, seeds=args.seeds,
             finetune_epochs=args.finetune_epochs)
    return 0
