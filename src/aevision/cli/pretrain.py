"""``aevision pretrain``: train an autoencoder from a YAML config plus overrides."""

from __future__ import annotations

import argparse
from typing import Any

from aevision.cli.common import Parser, add_engine_arguments, flag_overrides
from aevision.validation import plural

# flag -> config key (besides the engine flags); each given flag becomes an override
FLAGS = {
    "model": "model.name", "dataset": "data.name", "data_root": "data.root", "strategy": "train.strategy",
    "num_nodes": "train.num_nodes", "limit": "data.limit", "max_memory": "train.max_memory_gb",
}


def add_parser(sub: Any) -> None:
    p: Parser = sub.add_parser(
        "pretrain", help="train an autoencoder on unlabelled images",
        description="Train an autoencoder. Settings come from defaults, then --config, then the "
        "flags, then KEY=VALUE overrides (e.g. model.code_dim=64 train.epochs=5).")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    p.add_argument("-c", "--config", metavar="FILE", help="YAML config file")
    p.add_argument("--model", metavar="NAME", help="architecture (see 'aevision models')")
    p.add_argument("--dataset", metavar="NAME", help="dataset (see 'aevision datasets')")
    p.add_argument("--reg", action="append", default=[], metavar="NAME[:k=v,...]",
                   help="add a regularizer, e.g. --reg l1:weight=1e-4 --reg denoising:sigma=0.3")
    p.add_argument("--data-root", metavar="DIR", help="dataset folder (default $AEVISION_DATA)")
    p.add_argument("--limit", type=int, metavar="N",
                   help="use at most N training images (videos: N sequences), drawn with --seed")
    p.add_argument("--init-from", metavar="MODEL", help="start from these trained weights (a model folder "
                   "or .safetensors of the same architecture): continued pretraining, fine-tuning, transfer")
    add_engine_arguments(p, "runs/pretrain")
    p.add_argument("--strategy", help="Lightning strategy: auto, ddp, ddp_spawn, fsdp, ...")
    p.add_argument("--num-nodes", type=int)
    p.add_argument("--max-memory", type=float, metavar="GiB",
                   help="CPU runs: fail with a message instead of exhausting memory")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from aevision.api import pretrain
    from aevision.config import build_config, load_yaml, parse_regularizer

    overrides = flag_overrides(args, FLAGS)
    base: dict[str, Any] = load_yaml(args.config) if args.config else {}
    if args.reg:
        base["regularizers"] = list(base.get("regularizers") or []) + [parse_regularizer(s) for s in args.reg]
    cfg = build_config(base=base, overrides=overrides)
    result = pretrain(cfg, resume=args.resume, init_from=args.init_from, overwrite=args.overwrite)
    if result.global_rank != 0:
        return 0
    fit = result.fit
    if result.fit and fit.history:
        last = fit.history[-1]
        val = f", best val loss {fit.best_val_loss:.5g} (epoch {fit.best_epoch})" \
            if fit.best_val_loss is not None and "val_loss" in last else ""
        start = f" from {args.init_from}" if args.init_from else ""
        print(f"trained {cfg.model.name} on {cfg.data.name}{start}: {plural(len(fit.history), 'epoch')}, "
              f"{plural(fit.steps, 'step')}{val}")
    print(f"saved {result.out_dir}/model.safetensors and config.json")
    return 0
