"""``aevision restore``: denoise or inpaint a folder of images with a denoising autoencoder."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from aevision.cli.common import Parser, positive
from aevision.errors import AevisionError


def add_parser(sub: Any) -> None:
    p: Parser = sub.add_parser(
        "restore", help="denoise or inpaint images with a denoising autoencoder",
        description="Restore degraded images: --task denoise cleans noisy images; --task inpaint "
        "fills the transparent pixels (alpha 0) of the inputs. With --simulate, the inputs are "
        "clean images that are first degraded (seeded), and PSNR/SSIM before and after are "
        "written to OUT/metrics.json. Writes the restored images and OUT/grid.png (before/after).")
    p.add_argument("model", help="model folder (trained with --reg denoising:...)")
    p.add_argument("inputs", nargs="+", metavar="IMAGES", help="image files or folders")
    p.add_argument("--task", choices=("denoise", "inpaint"), required=True)
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--overwrite", action="store_true",
                   help="replace files of the same names in DIR (the inputs, when DIR is their folder)")
    p.add_argument("--simulate", metavar="NOISE[:k=v,...]",
                   help="degrade clean inputs first: gaussian:sigma=0.3, salt_pepper:p=0.1, "
                   "blocks:p=0.25,block=8 (inpaint), masking:p=0.5 (inpaint)")
    p.add_argument("--seed", type=int, default=0, help="seed of --simulate's noise (default 0)")
    p.add_argument("-n", "--num", type=int, default=8, help="images shown in the grid (default 8)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from aevision.api import load
    from aevision.data.images import image_files
    from aevision.tasks.restore import Degradation
    from aevision.tasks.restore_files import restore_files

    positive(args, "--num")
    model = load(args.model, args.device)
    degradation = Degradation.parse(args.simulate) if args.simulate else None
    if degradation is not None and degradation.holes != (args.task == "inpaint"):
        raise AevisionError(f"--simulate {args.simulate}: a {'hole' if degradation.holes else 'noise'} "
                            f"corruption does not fit --task {args.task}")
    done = restore_files(model, image_files(args.inputs), args.out, task=args.task, degradation=degradation,
                         seed=args.seed, shown=args.num, command=" ".join(["aevision", *sys.argv[1:]]),
                         model_path=str(args.model), overwrite=args.overwrite)
    print(f"wrote {done.count} restored images and {done.grid}")
    if done.note:
        print(f"note: {done.note}")
    if done.mean:
        m = done.mean
        change = {k: f"{k.upper()} {m[f'{k}_degraded']:.{digits}f} -> {m[f'{k}_restored']:.{digits}f}{unit}"
                  for k, digits, unit in (("psnr", 2, " dB"), ("ssim", 3, "")) if f"{k}_degraded" in m}
        print(f"{degradation.label() if degradation else ''}: {', '.join(change.values())}")
        if done.lowered:  # one line, so that a model that does harm is never silent
            print(f"the restored images are worse than the degraded ones: the model lowered "
                  f"{' and '.join(k.upper() for k in done.lowered)} on these images "
                  f"({', '.join(change[k] for k in done.lowered)})")
    return 0
