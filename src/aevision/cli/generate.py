"""``aevision sample`` and ``aevision interpolate``: image grids decoded from the code space."""

from __future__ import annotations

import argparse
from typing import Any

from aevision.cli.common import Parser, add_data_arguments, load_inputs, output_path, positive
from aevision.errors import AevisionError


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
                   help="with --dataset: rows, from the first 2 x PAIRS images (default 4)")
    p.add_argument("--path", choices=("linear", "slerp"), default="linear",
                   help="straight line, or great circle (suits VAE codes)")
    p.add_argument("-o", "--out", required=True, metavar="FILE.png")
    p.add_argument("--device", default="cpu")
    p.set_defaults(run=run_interpolate)


def run_sample(args: argparse.Namespace) -> int:
    from aevision.api import load
    from aevision.report.plots import image_grid, save_image
    from aevision.tasks.generate import sample

    positive(args, "--num", "--nrow")
    out = output_path(args.out, (".png",))
    model = load(args.model, args.device)
    images = sample(model, args.num, seed=args.seed, temperature=args.temperature)
    rows = list(images.split(args.nrow))
    save_image(out, image_grid(rows, scale=max(1, 64 // images.shape[-2])))
    print(f"wrote {out} ({args.num} samples, temperature {args.temperature:g}, seed {args.seed})")
    return 0


def run_interpolate(args: argparse.Namespace) -> int:
    from aevision.api import load
    from aevision.report.plots import image_grid, save_image
    from aevision.tasks.generate import interpolate

    positive(args, "--steps", "--pairs")
    out = output_path(args.out, (".png",))
    model = load(args.model, args.device)
    if args.dataset and args.limit is None:
        args.limit = 2 * args.pairs
    data = load_inputs(args, model)
    if len(data) < 2 or len(data) % 2:
        raise AevisionError(f"interpolate: needs images in pairs, got {len(data)} image(s)")
    rows = [interpolate(model, data.images[i], data.images[i + 1], args.steps, args.path)
            for i in range(0, len(data), 2)]
    if rows[0].shape[1:] != data.images.shape[1:]:
        raise AevisionError("interpolate: this model decodes a different target than its input "
                            f"({tuple(rows[0].shape[1:])}), not images to show")
    save_image(out, image_grid(rows, scale=max(1, 64 // rows[0].shape[-2])))
    print(f"wrote {out} ({len(rows)} rows x {args.steps} steps, {args.path})")
    return 0
