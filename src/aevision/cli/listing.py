"""``aevision models`` and ``aevision datasets``: what the registries hold."""

from __future__ import annotations

import argparse
import inspect
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("models", help="list architectures and regularizers with their options")
    p.set_defaults(run=run_models)
    p = sub.add_parser("datasets", help="list datasets")
    p.set_defaults(run=run_datasets)


def _options(fn: Any) -> str:
    params = inspect.signature(fn).parameters.values()
    shown = [f"{p.name} (required)" if p.default is inspect.Parameter.empty else f"{p.name}={p.default!r}"
             for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]
    return ", ".join(shown)


def run_models(args: argparse.Namespace) -> int:
    from aevision.models import MODELS
    from aevision.regularizers import REGULARIZERS

    print("architectures (model.name):")
    for e in MODELS:
        print(f"  {e.name:<12} {e.summary}")
        print(f"  {'':<12} options: {_options(e.fn) or 'none'}")
    print("\nregularizers (--reg NAME[:key=value,...] or a 'regularizers:' list in the config):")
    for e in REGULARIZERS:
        print(f"  {e.name:<12} {e.summary}")
        print(f"  {'':<12} options: {_options(e.fn) or 'none'}")
    return 0


def run_datasets(args: argparse.Namespace) -> int:
    from aevision.data import DATASETS, data_root

    print(f"datasets (data.name; files are looked for under {data_root()}):")
    width = max(len(e.name) for e in DATASETS)
    for e in DATASETS:
        print(f"  {e.name:<{width}} {e.summary}")
        opts = _options(e.fn)
        if opts:
            print(f"  {'':<{width}} options: {opts}")
    return 0
