"""``aevision benchmark``: models x datasets x protocols x label budgets from a YAML file or preset."""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any

from aevision.cli.common import Parser, add_logger_argument, logger_names


def add_parser(sub: Any) -> None:
    from aevision.benchmark.config import PRESETS

    p: Parser = sub.add_parser(
        "benchmark", help="compare autoencoder features with baselines: linear probe, kNN, "
        "fine-tuning, label budgets, imbalance; writes a leaderboard",
        description="Run a benchmark from CONFIG (a YAML file, or a preset: "
        f"{', '.join(PRESETS)}). Flags and KEY=VALUE overrides (e.g. "
        "protocols.finetune.train.epochs=2 models.conv.train.epochs=5) change it.")
    # one positional list (CONFIG then overrides): argparse cannot split two positional groups
    # around options, and overrides often come after them
    p.add_argument("items", nargs="+", metavar="CONFIG [KEY=VALUE ...]",
                   help=f"a YAML file or a preset ({', '.join(PRESETS)}), then config overrides")
    p.add_argument("--labels", metavar="LIST",
                   help="label budgets, e.g. 10,100,1000,all (per class; '1000t' = 1000 in total)")
    p.add_argument("--seeds", type=int, metavar="N", help="label-subset seeds (default from CONFIG)")
    p.add_argument("--seed", type=int, help="base seed (pretraining; subsets use seed, seed+1, ...)")
    p.add_argument("--imbalance", type=float, metavar="RATIO",
                   help="also train on a long-tailed set (largest / smallest class = RATIO) and "
                   "compare plain with class-weighted loss (balanced accuracy)")
    p.add_argument("--epochs", type=int, metavar="N", help="pretraining epochs of every model")
    p.add_argument("--data-root", metavar="DIR", help="where datasets live (default $AEVISION_DATA)")
    p.add_argument("-o", "--out", metavar="DIR", help="output folder (default from CONFIG)")
    p.add_argument("--retrain", action="store_true",
                   help="pretrain again even when a model with the same config is saved")
    p.add_argument("--resume", action="store_true",
                   help="reuse every protocol run that an earlier run of this benchmark finished from "
                   "identical inputs (config, model weights, aevision version): a killed or extended "
                   "benchmark only runs what is new. Not for checking a code change")
    p.add_argument("--progress", action="store_true", help="per-epoch lines while training")
    p.add_argument("--pretrain-only", action="store_true",
                   help="only pretrain the models (or find them pretrained), then stop; run several "
                   "of these in parallel with --models, then the full benchmark reuses them")
    p.add_argument("--models", metavar="NAMES", help="with --pretrain-only: which models (a,b,...)")
    add_logger_argument(p)  # the pretraining runs' (fine-tunes: protocols.finetune.train.loggers)
    p.set_defaults(run=run)


def overrides_from(args: argparse.Namespace, models: list[str], n_datasets: int) -> list[str]:
    """The flags as KEY=VALUE overrides (applied before the explicit ones)."""
    out: list[str] = []
    if args.labels is not None:
        out.append(f"labels=[{args.labels}]")
    if args.seeds is not None:
        out.append(f"seeds={args.seeds}")
    if args.seed is not None:
        out.append(f"seed={args.seed}")
    if args.imbalance is not None:
        out.append(f"imbalance.ratio={args.imbalance}")
    if args.epochs is not None:
        out += [f"models.{m}.train.epochs={args.epochs}" for m in models]
    if args.data_root is not None:
        out += [f"datasets.{i}.root={args.data_root}" for i in range(n_datasets)]
    if args.out is not None:
        out.append(f"output_dir={args.out}")
    if args.retrain:
        out.append("reuse_pretrained=false")
    if args.resume:
        out.append("reuse_runs=true")
    if args.progress:
        out.append("progress=true")
    loggers = logger_names(args)
    if loggers is not None:
        out.append(f"loggers=[{', '.join(loggers)}]")
    return out


def run(args: argparse.Namespace) -> int:
    from aevision.benchmark import load_benchmark, run_benchmark
    from aevision.cli.common import positive
    from aevision.errors import AevisionError

    positive(args, "--seeds", "--epochs")
    config, overrides = args.items[0], list(args.items[1:])
    for item in overrides:
        if "=" not in item:
            raise AevisionError(f"{item!r}: expected KEY=VALUE after CONFIG (one CONFIG only)")
    base = load_benchmark(config, overrides)
    cfg = load_benchmark(config, overrides_from(args, list(base.models), len(base.datasets)) + overrides)
    command = "aevision " + " ".join(shlex.quote(a) for a in sys.argv[1:]) \
        if sys.argv and sys.argv[0].endswith(("aevision", "__main__.py")) else None
    if args.models and not args.pretrain_only:
        raise AevisionError("--models: only with --pretrain-only (the benchmark itself runs every "
                            "model of CONFIG)")
    if args.pretrain_only:
        from aevision.benchmark import pretrain_models

        names = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
        pretrain_models(cfg, names)
        return 0
    run_benchmark(cfg, command=command)
    return 0
