"""What every bench script shares: its options, the record beside its numbers, and how it publishes.

A result says where it came from: the ``command`` that reproduces it (:func:`command`), its
``wall_seconds`` and the ``machine`` it ran on (:func:`aevision.provenance.machine_info`, plus the
load average where timings matter: :func:`provenance`). :func:`publish` writes it to
``bench/results`` (atomically, :func:`aevision.io.write_json`) and prints it.

Scripts import this module as ``import common``: a script's own folder is on the import path when it
runs as ``python bench/x.py`` (and the tests' ``bench_script`` fixture puts it there).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aevision.api import pretrain
from aevision.io import write_json
from aevision.provenance import machine_info

RESULTS = Path(__file__).resolve().parent / "results"
DATA = "AEVISION_DATA=/work/shared/datasets"  # where the committed results read their datasets
SHARED = "2 cores shared with other jobs"


def parser(doc: str, out: str, *, data: bool = False, runs: str | None = None,
           reuse: str = "load models already trained in --runs") -> argparse.ArgumentParser:
    """The options bench scripts share: ``--out`` (default ``bench/results/<out>``); with ``data``,
    ``--data-root`` (default ``$AEVISION_DATA``); with ``runs`` (the default folder of the trained
    models), ``--runs`` and ``--reuse`` (``reuse``: its help)."""
    p = argparse.ArgumentParser(description=doc.split("\n")[0])
    if data:
        p.add_argument("--data-root", default=os.environ.get("AEVISION_DATA"))
    if runs is not None:
        p.add_argument("--runs", default=runs, help="where the trained models go (not committed)")
        p.add_argument("--reuse", action="store_true", help=reuse)
    p.add_argument("--out", default=str(RESULTS / out))
    return p


def command(script: str, argv: Sequence[str] | None = None, *, data: bool = False) -> str:
    """The shell line that reproduces this run: ``python bench/<script> ARGS`` (``argv``: the
    script's arguments, default ``sys.argv[1:]``), after where the datasets were when ``data``."""
    args = sys.argv[1:] if argv is None else argv
    return " ".join([*([DATA] if data else []), "python", f"bench/{script}", *map(shlex.quote, args)])


def machine(note: str | None = None, *, load_average: bool = False) -> dict[str, Any]:
    """:func:`aevision.provenance.machine_info`, with the 1/5/15-minute load average and a ``note``
    (how to read the timings) when asked."""
    info = machine_info()
    if load_average:
        info["load_average"] = os.getloadavg()
    if note is not None:
        info["note"] = note
    return info


def provenance(started: float, note: str | None = None, *, load_average: bool = False) -> dict[str, Any]:
    """``wall_seconds`` since ``started`` (a ``time.time()``) and the ``machine``: the last keys of a
    result."""
    return {"wall_seconds": round(time.time() - started, 1),
            "machine": machine(note, load_average=load_average)}


def mean_std(values: Sequence[float], digits: int = 4) -> dict[str, Any]:
    """One cell of a result table: the mean, the (population) std and every run, rounded."""
    return {"mean": round(statistics.fmean(values), digits),
            "std": round(statistics.pstdev(values), digits) if len(values) > 1 else 0.0,
            "runs": [round(v, digits) for v in values]}


def publish(out: str | os.PathLike[str], result: dict[str, Any], shown: dict[str, Any] | None = None,
            **dumps: Any) -> None:
    """Write ``result`` to ``out`` and print ``shown`` (default: all of it) as JSON on stdout
    (``dumps``: :func:`json.dumps` options; without ``indent`` one line, which
    ``peers.json_child`` reads back)."""
    write_json(out, result)
    print(json.dumps(result if shown is None else shown, **dumps))


def trial_setup(doc: str, out: str, *, add: Any = None) -> tuple[argparse.Namespace, Any]:
    """The command line of a trial script (``preset model [KEY=VALUE ...]``, ``--threads``, ``--runs``
    and ``--reuse``; ``add(parser)`` adds its own) and the preset it names, with the overrides and
    only that model fine-tuned (no imbalance runs)."""
    import torch

    from aevision.benchmark import load_benchmark

    p = parser(doc, out, runs="runs/probe_trial")
    p.add_argument("preset")
    p.add_argument("model", help="the preset's model to try (after the overrides)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    if add is not None:
        add(p)
    args = p.parse_args()
    torch.set_num_threads(max(1, args.threads))
    cfg = load_benchmark(args.preset, [*args.overrides, f"protocols.finetune.models=[{args.model}]",
                                       "imbalance.ratio=null"])
    return args, cfg


def preset_model(cfg: Any, name: str, runs: str, reuse: bool, script: str, pretrain: bool = True
                 ) -> tuple[Any, Any, Any, dict[str, Any] | None]:
    """A benchmark preset's model ``name`` pretrained on the preset's first dataset, in
    ``runs/name`` (read back with ``reuse``): the splits (a labelled validation split required: the
    trial scripts choose on it, never on test), the model, its untrained twin (the weights its
    pretraining started from, drawn the same way) and what is known of its pretraining (its
    training CPU seconds too, recorded by the engine and so known when read back). Without
    ``pretrain`` the model and its pretraining are None: the twin alone (a scratch trial)."""
    from dataclasses import replace

    import torch

    from aevision.data import load_dataset
    from aevision.tasks.pretrain import model_from_config

    splits = load_dataset(cfg.datasets[0], cfg.seed)
    if splits.val is None or splits.val.labels is None:
        raise SystemExit(f"{script}: the dataset has no labelled validation split (set val_fraction)")
    pcfg = replace(cfg.pretrain_config(name, cfg.datasets[0]), output_dir=f"{runs}/{name}")
    model, pretraining = None, None
    if pretrain:
        model, pretraining = pretrained(pcfg.to_dict(), splits, reuse, [
            "epochs", "steps", "val_recon", "seconds", "train_seconds", "train_cpu_seconds"])
    torch.manual_seed(pcfg.seed)
    untrained = model_from_config(pcfg, splits.train.image_shape)
    return splits, model, untrained, pretraining


def pretrained(config: dict[str, Any], data: Any, reuse: bool, keep: Sequence[str]
               ) -> tuple[Any, dict[str, Any]]:
    """The model ``config`` describes, trained on ``data``; with ``reuse`` (``--reuse``) read back
    when the identical run finished in its folder (the run lifecycle's key: config, data, aevision
    version; any other run there is retrained), and resumed when it was killed. Returns the model
    and the ``keep`` items of what is known of its training (config, epochs, steps, val_recon, last_epoch,
    best_epoch, seconds, train_seconds, train_cpu_seconds, history), with ``reused`` when read
    back. CPU seconds count only work done: a run paused (SIGSTOP) or slowed by other jobs shows
    it in its wall seconds alone."""
    result = pretrain(config, data=data, reuse=reuse, overwrite=True)  # the bench's own folders
    last = result.history[-1] if result.history else {}
    info = {"config": result.config.to_dict(), "epochs": len(result.history), "steps": result.fit.steps,
            "val_recon": last.get("val_recon"), "last_epoch": last, "best_epoch": result.fit.best_epoch,
            "seconds": result.timing.get("wall_seconds"), "train_seconds": result.fit.train_seconds,
            "train_cpu_seconds": result.fit.train_cpu_seconds, "history": result.history}
    return result.model, {**{k: info[k] for k in keep}, **({"reused": True} if result.reused else {})}
