"""``aevision predict-masks``: apply a trained segmenter to image files or folders."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from aevision.cli.common import Parser
from aevision.errors import ConfigError
from aevision.validation import plural


def add_parser(sub: Any) -> None:
    p: Parser = sub.add_parser(
        "predict-masks", help="segment images with a trained segmenter (palette-PNG masks)",
        description="Write OUT/masks/<name>.png for every image (a palette PNG whose pixel values are "
        "class ids, at the image's own size), OUT/overlays/<name>.png (the mask over the image) and "
        "OUT/predictions.json (files and the fraction of each class).")
    p.add_argument("segmenter", help="folder written by 'aevision segment' (or its model.safetensors)")
    p.add_argument("inputs", nargs="+", metavar="IMAGES", help="image files or folders")
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--no-overlays", action="store_true", help="write the masks only")
    p.add_argument("--tta", metavar="FLIPS", help="test-time flips averaged over: hflip, vflip, "
                   "hflip,vflip or none (default: those the segmenter was scored with)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from aevision.tasks.segmentation import load_segmenter, predict_files

    seg = load_segmenter(args.segmenter, args.device)
    if args.tta is not None:
        flips = [] if args.tta == "none" else [name.strip() for name in args.tta.split(",")]
        try:
            seg.tta = flips
        except ConfigError as e:
            raise ConfigError("--tta", flips, e.expected) from None
    done = predict_files(seg, args.inputs, args.out, overlays=not args.no_overlays, device=args.device)
    out = Path(args.out)
    print(f"wrote {plural(len(done), 'mask')} to {out / 'masks'}"
          + ("" if args.no_overlays else f" and overlays to {out / 'overlays'}"))
    return 0
