"""``aevision segment``: train a U-Net on masks around a pretrained encoder, then test it."""

from __future__ import annotations

import argparse
from typing import Any

from aevision.cli.common import Parser, add_engine_arguments, flag_overrides

# flag -> config key (besides the engine flags); each given flag becomes an override
FLAGS = {
    "encoder": "encoder", "dataset": "data.name", "data_root": "data.root", "labels": "labels",
    "freeze_epochs": "freeze_epochs", "image_size": "data.image_size",
}


def add_parser(sub: Any) -> None:
    p: Parser = sub.add_parser(
        "segment", help="train and test a segmenter (U-Net) on a pretrained encoder",
        description="Train a U-Net whose encoder is the encoder of a model from 'aevision pretrain' "
        "(or the same architecture from random weights, --scratch), on masks of a segmentation "
        "dataset (shapes-seg, segfolder:PATH, penn-fudan, oxford-pet), then score it on the test "
        "split. Settings: defaults, then --config, then flags, then KEY=VALUE overrides (e.g. "
        "loss.dice_weight=0.5 augment.zoom=1.3 decoder.channels=[16,32,64]).")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    p.add_argument("-c", "--config", metavar="FILE", help="YAML config file")
    p.add_argument("--encoder", metavar="MODEL", help="model folder from 'aevision pretrain'")
    p.add_argument("--scratch", action="store_true",
                   help="random initial weights (the baseline); the architecture comes from --encoder "
                   "if given, else from arch.* overrides")
    p.add_argument("--dataset", metavar="NAME", help="segmentation dataset (default shapes-seg)")
    p.add_argument("--data-root", metavar="DIR", help="dataset folder (default $AEVISION_DATA)")
    p.add_argument("--image-size", metavar="[H,W]", help="resize images and masks, e.g. [96,128]")
    p.add_argument("--labels", type=int, metavar="N", help="train on N masks only (default: all)")
    p.add_argument("--freeze-epochs", type=int, metavar="N",
                   help="keep the pretrained encoder frozen for the first N epochs")
    add_engine_arguments(p, "runs/segment")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from aevision.config import load_yaml
    from aevision.tasks.segmentation import build_segment_config, segment

    overrides = flag_overrides(args, FLAGS)
    if args.scratch:  # before the KEY=VALUE overrides, which keep the last word
        overrides.insert(len(overrides) - len(args.overrides), "init=scratch")
    base: dict[str, Any] = load_yaml(args.config) if args.config else {}
    cfg = build_segment_config(base=base, overrides=overrides)
    result = segment(cfg, resume=args.resume, overwrite=args.overwrite)
    m = result.metrics
    per_class = ", ".join(f"{k} {v:.3f}" if v is not None else f"{k} -" for k, v in m["iou"].items())
    print(f"test mIoU {m['miou']:.4f} (IoU: {per_class}); Dice {m['mean_dice']:.4f}; "
          f"pixel accuracy {m['pixel_accuracy']:.4f}")
    print(f"saved {result.out_dir}/model.safetensors, config.json, metrics.json, predictions/, overlays/")
    return 0
