"""``aevision compress`` and ``aevision decompress``: images <-> one compressed file."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from aevision.cli.common import Parser
from aevision.validation import plural


def add_parser(sub: Any) -> None:
    p: Parser = sub.add_parser(
        "compress", help="compress images into one file with a trained codec",
        description="Encode images (any sizes) with a model trained with an entropy model "
        "(--reg factorized or --reg hyperprior) into one compact file.")
    p.add_argument("inputs", nargs="+", metavar="IMAGES", help="image files or folders (sorted)")
    p.add_argument("-m", "--model", required=True, help="codec model folder (from 'aevision pretrain')")
    p.add_argument("-o", "--out", required=True, metavar="FILE", help="the compressed file (e.g. photos.aev)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(run=run_compress)

    p = sub.add_parser(
        "decompress", help="decode a compressed file into PNG images",
        description="Decode FILE with the model that made it; writes DIR/<name>.png, the names of "
        "the files that were compressed.")
    p.add_argument("file", metavar="FILE")
    p.add_argument("-m", "--model", required=True, help="the codec model folder the file was made with")
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace PNGs of the same names in DIR")
    p.add_argument("--device", default="cpu")
    p.set_defaults(run=run_decompress)


def run_compress(args: argparse.Namespace) -> int:
    from aevision.api import load
    from aevision.data.images import image_files
    from aevision.tasks.compress import Codec, compress_files

    done = compress_files(Codec(load(args.model, args.device)), image_files(args.inputs), args.out)
    print(f"wrote {args.out}: {plural(done.images, 'image')}, {done.size:,} bytes "
          f"({done.header_bytes} header), {done.bits_per_pixel:.4f} bits per pixel")
    return 0


def run_decompress(args: argparse.Namespace) -> int:
    from aevision.tasks.compress import decompress_file

    written = decompress_file(args.model, args.file, args.out, args.device, overwrite=args.overwrite)
    print(f"wrote {plural(len(written), 'image')} to {Path(args.out)}/")
    return 0
