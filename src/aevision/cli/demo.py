"""``aevision demo``: the main job, offline, on the embedded digits (under 3 minutes on 2 cores)."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "demo", help="pretrain several autoencoders on digits and compare their features "
        "with pixels and PCA (offline, ~1 minute)")
    p.add_argument("-o", "--out", default="runs/demo", metavar="DIR", help="default runs/demo")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=60, help="pretraining epochs per model")
    p.add_argument("--seeds", type=int, default=3, help="label-subset seeds to average over")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from aevision.cli.common import positive
    from aevision.demo import run_demo

    positive("--epochs", args.epochs)
    positive("--seeds", args.seeds)
    run_demo(args.out, seed=args.seed, epochs=args.epochs, seeds=args.seeds)
    return 0
