"""``aevision prepare``: a dataset written once as litdata chunks, for ``--dataset shards:PATH``."""

from __future__ import annotations

import argparse
from typing import Any

from aevision.cli.common import Parser


def add_parser(sub: Any) -> None:
    p: Parser = sub.add_parser(
        "prepare", help="write a dataset as streamable chunks (for --dataset shards:PATH)",
        description="Decode SOURCE (a folder, folder:PATH, segfolder:PATH, crops:PATH or a dataset "
        "name) at one size and write it as litdata chunks, one folder per split (train, val carved "
        "here, test) and aevision.json. Labels, masks and each image's file travel with it. Train "
        "with --dataset shards:OUT (or a copy of OUT in object storage, e.g. s3://bucket/OUT): "
        "read into memory when it fits data.memory, streamed otherwise.")
    p.add_argument("source", help="folder, folder:PATH, segfolder:PATH, crops:PATH or a dataset name")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="the dataset's own options (e.g. n_train=320 size=24)")
    p.add_argument("-o", "--out", required=True, metavar="SHARDS", help="the folder to write")
    p.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"),
                   help="bring every image to this size (a folder's default: its first image's)")
    p.add_argument("--channels", type=int, choices=(1, 3), help="convert images to 1 or 3 channels")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="training images held out for validation, seeded (default 0.1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the validation split (default 0)")
    p.add_argument("--root", help="where named datasets live (default $AEVISION_DATA)")
    p.add_argument("--chunk-bytes", default="64MB", help="size of one chunk (default 64MB)")
    p.add_argument("--overwrite", action="store_true", help="replace a prepared dataset in SHARDS")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from aevision.tasks.prepare import prepare
    from aevision.validation import plural

    result = prepare(args.source, args.out, image_size=args.image_size, channels=args.channels,
                     root=args.root, val_fraction=args.val_fraction, seed=args.seed,
                     chunk_bytes=args.chunk_bytes, progress=not args.no_progress, overwrite=args.overwrite,
                     options=dataset_options(args.overrides))
    info = result.info
    counts = ", ".join(f"{split} {n}" for split, n in info.counts.items())
    c, h, w = info.image_shape
    print(f"wrote {result.out}: {counts} images of {c}x{h}x{w}"
          f"{' with masks' if info.masks else ''} in {result.seconds:.1f}s; train with --dataset "
          f"shards:{result.out}")
    if result.skipped:
        print(f"skipped {plural(len(result.skipped), 'unreadable file')} (e.g. {result.skipped[0].path}: "
              f"{result.skipped[0].reason})")
    return 0


def dataset_options(pairs: list[str]) -> dict[str, Any]:
    """``["n_train=320", "kinds=[disc]"]`` -> ``{"n_train": 320, "kinds": ["disc"]}`` (YAML values)."""
    import yaml

    from aevision.cli.common import UsageError

    options = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise UsageError(f"{pair!r}: expected KEY=VALUE (a dataset option)")
        options[key.removeprefix("data.")] = yaml.safe_load(value)
    return options
