"""``aevision encode``: images -> features file (.npy or .safetensors)."""

from __future__ import annotations

import argparse
from typing import Any

from aevision.cli.common import Parser, add_data_arguments, load_inputs, output_path


def add_parser(sub: Any) -> None:
    p: Parser = sub.add_parser(
        "encode", help="compute features of images with a trained encoder",
        description="Write the code of every image: .npy (features only) or .safetensors "
        "(features, labels when known, and the source file names in the metadata).")
    p.add_argument("model", help="model folder (from 'aevision pretrain') or model.safetensors")
    add_data_arguments(p)
    p.add_argument("-o", "--out", required=True, metavar="FILE", help="features.npy or .safetensors")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from aevision.api import load
    from aevision.tasks.model_outputs import write_features

    out = output_path(args.out, (".npy", ".safetensors"))
    model = load(args.model, args.device)
    data = load_inputs(args, model)
    features = write_features(model, data, out, batch_size=args.batch_size, device=args.device,
                              model_path=args.model)
    print(f"wrote {out}: {features.shape[0]} x {features.shape[1]} features")
    if data.skipped:
        print(f"skipped {len(data.skipped)} unreadable files (e.g. {data.skipped[0].path}: "
              f"{data.skipped[0].reason})")
    return 0
