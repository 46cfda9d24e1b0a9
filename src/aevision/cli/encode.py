"""``aevision encode``: images -> features file (.npy or .safetensors)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from aevision.cli.common import Parser, add_data_arguments, model_inputs, output_path


def add_parser(sub: Any) -> None:
    p: Parser = sub.add_parser(
        "encode", help="compute features of images with a trained encoder",
        description="Write the code of every image: .npy (and FILE.rows.json beside it) or "
        ".safetensors; either says which image each row is (its file, or its index in --split all "
        "of --dataset), its label and the class names, the files skipped and what was resized.")
    p.add_argument("model", help="model folder (from 'aevision pretrain') or model.safetensors")
    add_data_arguments(p)
    p.add_argument("-o", "--out", required=True, metavar="FILE", help="features.npy or .safetensors")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--memory", type=float, metavar="GIB",
                   help="one folder or --dataset shards:PATH whose decoded images exceed this is streamed, "
                   "its features written as they come (.npy; default: a quarter of RAM)")
    p.add_argument("--workers", type=int, default=2, help="loader processes when streaming (default 2)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from aevision.api import load
    from aevision.tasks.model_outputs import rows_path, write_features
    from aevision.tasks.streamed_features import streamed_input, write_streamed_features
    from aevision.validation import plural

    out = output_path(args.out, (".npy", ".safetensors"))
    model = load(args.model, args.device)
    if args.limit is None:
        shape = tuple(model.input_shape)
        stream = streamed_input(args.dataset, args.inputs, args.split, shape, args.memory, args.resize)
        if stream is not None:
            rows, dim = write_streamed_features(model, stream, out, batch_size=args.batch_size,
                                                device=args.device, workers=args.workers,
                                                model_path=args.model)
            print(f"wrote {out}: {rows} x {dim} features, streamed from {stream.name} "
                  f"(rows: {rows_path(out)})")
            note = stream.resize_note()
            if note:
                print(note, file=sys.stderr)
            return 0
    inputs = model_inputs(args, model)
    features = write_features(model, inputs, out, batch_size=args.batch_size, device=args.device,
                              model_path=args.model)
    rows = f" (rows: {rows_path(out)})" if out.suffix.lower() == ".npy" else ""
    print(f"wrote {out}: {features.shape[0]} x {features.shape[1]} features{rows}")
    data = inputs.data
    if data.skipped:
        print(f"skipped {plural(len(data.skipped), 'unreadable file')} (e.g. {data.skipped[0].path}: "
              f"{data.skipped[0].reason})")
    return 0
