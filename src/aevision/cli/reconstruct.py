"""``aevision reconstruct``: a PNG grid of inputs and their reconstructions."""

from __future__ import annotations

import argparse
from typing import Any

from aevision.cli.common import Parser, add_data_arguments, load_inputs, output_path, positive
from aevision.validation import plural


def add_parser(sub: Any) -> None:
    p: Parser = sub.add_parser(
        "reconstruct", help="write a grid of images and their reconstructions",
        description="Top row: input images; bottom row: what the autoencoder makes of them.")
    p.add_argument("model", help="model folder (from 'aevision pretrain') or model.safetensors")
    add_data_arguments(p)
    p.add_argument("-n", "--num", type=int, default=16, help="how many images (default 16)")
    p.add_argument("-o", "--out", required=True, metavar="FILE.png")
    p.add_argument("--device", default="cpu")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from aevision.api import load
    from aevision.tasks.model_outputs import save_reconstructions

    positive(args, "--num")
    out = output_path(args.out, (".png",))
    model = load(args.model, args.device)
    if args.limit is None:
        args.limit = args.num
    data = load_inputs(args, model)
    shown = data.subset(range(min(args.num, len(data))))
    save_reconstructions(model, shown, out, batch_size=args.batch_size, device=args.device)
    print(f"wrote {out} ({plural(len(shown), 'image')})")
    return 0
