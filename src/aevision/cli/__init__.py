"""The ``aevision`` command: a thin shell over the Python API.

Each subcommand lives in its own module with an ``add_parser(subparsers)`` function. Errors the
user can fix print one line and exit with status 2; nothing prints a traceback unless
``AEVISION_DEBUG=1``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import warnings
from collections.abc import Sequence

from aevision.cli.common import Parser, UsageError, check_device_and_output

# subcommand modules, in the order ``aevision --help`` lists them
COMMANDS = ("demo", "prepare", "pretrain", "encode", "reconstruct", "keypoints", "benchmark", "segment",
            "predict_masks", "compress", "restore", "retrieval", "generate", "anomaly", "report", "export",
            "listing")


def build_parser() -> Parser:
    from aevision.provenance import __version__

    parser = Parser(prog="aevision", description="Learn image representations with autoencoders "
                    "and put them to work.")
    parser.add_argument("--version", action="version", version=f"aevision {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name in COMMANDS:
        importlib.import_module(f"aevision.cli.{name}").add_parser(sub)
    return parser


# each command's open-ended positional list (at most one per command): images, or KEY=VALUE overrides
LIST_POSITIONALS = ("inputs", "overrides", "items")


def take_stray_positionals(parser: Parser, args: argparse.Namespace, extra: list[str]) -> None:
    """argparse fills a ``nargs="*"`` positional from one run of arguments only (cpython gh-87139,
    closed as not planned; gh-59317 fixed, in newer Pythons, only a list left empty by the first
    run): in ``pretrain model.name=conv -o runs/x train.epochs=5`` or, on Python 3.11, ``encode
    runs/ae --batch-size 64 photos/`` the argument after the option came back unrecognized. The
    command's list takes them wherever they stand, in order; overrides must still look like
    KEY=VALUE."""
    if not extra:
        return
    for dest in LIST_POSITIONALS:
        have = getattr(args, dest, None)
        if isinstance(have, list) and all(
                not a.startswith("-") and (dest != "overrides" or "=" in a) for a in extra):
            setattr(args, dest, [*have, *extra])
            return
    parser.error(f"unrecognized arguments: {' '.join(extra)}")


def main(argv: Sequence[str] | None = None) -> int:
    # aevision's own INFO lines; other libraries' only from WARNING on (FAISS's loader told of 8
    # attempts, one a ModuleNotFoundError, on every index/search/anomaly)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s", stream=sys.stderr)
    logging.getLogger("aevision").setLevel(logging.INFO)
    logging.getLogger("lightning").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=UserWarning, module="lightning")
    debug = os.environ.get("AEVISION_DEBUG") == "1"
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        take_stray_positionals(parser, args, extra)
        if not getattr(args, "run", None):
            parser.print_help()
            return 2
        check_device_and_output(args)
        result = args.run(args)
        return int(result or 0)
    except UsageError as e:
        print(f"{e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("aevision: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        from aevision.errors import AevisionError

        if debug:
            raise
        if isinstance(e, AevisionError):
            print(f"aevision: error: {e}", file=sys.stderr)
            return 2
        from aevision.engine.resources import is_out_of_memory

        if is_out_of_memory(e):
            print("aevision: error: out of memory (the model or data does not fit): lower "
                  "train.batch_size, the model size, or data.limit", file=sys.stderr)
            return 2
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(f"aevision: internal error: {type(e).__name__}: {first} "
              f"(rerun with AEVISION_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


