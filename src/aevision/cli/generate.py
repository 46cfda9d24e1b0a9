"""``aevision sample`` and ``aevision interpolate``: image grids decoded from the code space."""

from __future__ import annotations

import argparse
from typing import Any

from aevision.cli.common import Parser, add_data_arguments, load_inputs, output_path, positive
from aevision.validation import plural


def add_parser(sub: Any) -> None:
    p: Parser = sub.add_parser(
        "sample", help="decode random codes of a variational model into an image grid",
        description="Draw codes from the prior N(0, t^2 I) of a vae / conv-vae model and decode "
        "them. --temperature t < 1 gives cleaner, less varied images.")
    p.add_argument("model", help="model folder (from 'aevision pretrain') or model.safetensors")
    p.add_argument("-n", "--num", type=int, default=64, help="how many samples (default 64)")
    p.add_argument("--nrow", type=int, default=8, help="images per grid row (default 8)")
    p.add_argument("--temperature", type=float, default=1.0, help="prior scale (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--out", required=True, metavar="FILE.png")
    p.add_argument("--device", default="cpu")
    p.set_defaults(run=run_sample)

    p = sub.add_parser(
        "interpolate", help="decode the path between the codes of two images (grid)",
        description="Each row goes from one image to the next in --steps decoded codes: images "
        "are taken in pairs (1st->2nd, 3rd->4th, ...), from files or from --dataset.")
    p.add_argument("model", help="model folder (from 'aevision pretrain') or model.safetensors")
    add_data_arguments(p)
    p.add_argument("--steps", type=int, default=8, help="images per row, ends included (default 8)")
    p.add_argument("--pairs", type=int, default=4,
                   help="with --dataset: rows, from 2 x PAIRS images drawn with --seed (default 4)")
    p.add_argument("--path", choices=("linear", "slerp"), default="linear",
                   help="straight line, or great circle (suits VAE codes)")
    p.add_argument("-o", "--out", required=True, metavar="FILE.png")
    p.add_argument("--device", default="cpu")
    p.set_defaults(run=run_interpolate)


def run_sample(args: argparse.Namespace) -> int:
    from aevision.api import load
    from aevision.tasks.generate import save_samples

    positive(args, "--num", "--nrow")
    out = output_path(args.out, (".png",))
    save_samples(load(args.model, args.device), out, args.num, args.nrow, seed=args.seed,
                 temperature=args.temperature)
    print(f"wrote {out} ({plural(args.num, 'sample')}, temperature {args.temperature:g}, seed {args.seed})")
    return 0


def run_interpolate(args: argparse.Namespace) -> int:
    from aevision.api import load
    from aevision.tasks.generate import save_interpolations

    positive(args, "--steps", "--pairs")
    out = output_path(args.out, (".png",))
    model = load(args.model, args.device)
    if args.dataset and args.limit is None:
        args.limit = 2 * args.pairs
    rows = save_interpolations(model, load_inputs(args, model).images, out, args.steps, args.path)
    print(f"wrote {out} ({rows} rows x {args.steps} steps, {args.path})")
    return 0
