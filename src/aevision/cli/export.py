"""``aevision export``: a trained run -> ONNX or TorchScript files checked against PyTorch."""

from __future__ import annotations

import argparse
from typing import Any

from aevision.cli.common import Parser, positive


def add_parser(sub: Any) -> None:
    p: Parser = sub.add_parser(
        "export", help="export a trained model to ONNX or TorchScript, with parity checks",
        description="Write the encoder and the decoder of RUN as separate files (a codec: its analysis "
        "and synthesis transforms and hyperprior networks; a segmenter from 'aevision segment': the "
        "whole network) and DIR/export.json (input/output names, shapes, value ranges, model hash, "
        "parity). Every file is run back on real images and compared with PyTorch; an export that "
        "fails is an error and leaves nothing in DIR.")
    p.add_argument("source", metavar="RUN", help="a run folder of 'aevision pretrain' or 'aevision segment'")
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--format", choices=("onnx", "torchscript"), default="onnx")
    p.add_argument("--inputs", nargs="+", metavar="IMAGES", help="image files or folders to check parity "
                   "on (default: the held-out images of the data RUN was trained on)")
    p.add_argument("--resize", choices=("stretch", "crop", "pad"),
                   help="bring --inputs of another size to the model's (otherwise they are an error)")
    p.add_argument("--limit", type=int, default=16, help="images to check parity on (default 16)")
    p.add_argument("--tolerance", type=float, default=1e-4,
                   help="largest abs (and relative) difference from PyTorch allowed (default 1e-4)")
    p.add_argument("--data-root", metavar="DIR", help="where datasets live (default: $AEVISION_DATA)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from aevision.tasks.export import export_model

    positive(args, "--limit")
    result = export_model(args.source, args.out, fmt=args.format, inputs=args.inputs, limit=args.limit,
                          tolerance=args.tolerance, fit=args.resize, data_root=args.data_root)
    parity = result.manifest["parity"]
    print(f"wrote {', '.join(f.name for f in result.files)} to {result.out}/: parity on "
          f"{parity['inputs']}: max abs diff {parity['max_abs_diff']:.3g}, "
          f"max rel diff {parity['max_rel_diff']:.3g}")
    codec = parity.get("codec")
    if codec:
        print(f"codec: latents identical, a file compressed through the exported analysis "
              f"decompresses with aevision ({codec['images']} images, {codec['file_bytes']} bytes)")
    return 0
