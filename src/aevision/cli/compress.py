"""``aevision compress`` and ``aevision decompress``: images <-> one compressed file."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from aevision.cli.common import Parser


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
        description="Decode FILE with the model that made it; writes DIR/<file stem>-<n>.png.")
    p.add_argument("file", metavar="FILE")
    p.add_argument("-m", "--model", required=True, help="the codec model folder the file was made with")
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--device", default="cpu")
    p.set_defaults(run=run_decompress)


def run_compress(args: argparse.Namespace) -> int:
    from aevision.api import load
    from aevision.data.images import BadImage, image_files, load_image
    from aevision.errors import AevisionError
    from aevision.io import write_bytes
    from aevision.tasks.compress import Codec

    codec = Codec(load(args.model, args.device))
    images = []
    for path in image_files(args.inputs):
        try:
            images.append(load_image(path, codec.channels))
        except BadImage as e:
            raise AevisionError(f"{path}: {e}") from None
    result = codec.compress_latents(images)
    write_bytes(args.out, result.data)
    pixels = sum(int(i.shape[1]) * int(i.shape[2]) for i in images)
    print(f"wrote {args.out}: {len(images)} images, {len(result.data):,} bytes "
          f"({result.header_bytes} header), {8 * len(result.data) / pixels:.4f} bits per pixel")
    return 0


def run_decompress(args: argparse.Namespace) -> int:
    from aevision.api import load
    from aevision.errors import AevisionError
    from aevision.report.plots import save_image
    from aevision.tasks.compress import Codec

    path = Path(args.file)
    if not path.is_file():
        raise AevisionError(f"{path}: no such file")
    codec = Codec(load(args.model, args.device))
    images = codec.decompress(path.read_bytes(), source=str(path))
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise AevisionError(f"-o {out}: exists and is not a folder")
    width = max(3, len(str(len(images) - 1)))
    for i, img in enumerate(images):
        arr = img.permute(1, 2, 0).numpy()
        save_image(out / f"{path.stem}-{i:0{width}d}.png", arr[:, :, 0] if arr.shape[2] == 1 else arr)
    print(f"wrote {len(images)} images to {out}/")
    return 0
