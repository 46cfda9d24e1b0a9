"""Argument helpers shared by the subcommands."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from aevision.errors import AevisionError, ConfigError


class UsageError(Exception):
    """A command-line mistake; the message is already the one line to print."""


# the options that name something a command writes; one whose metavar is a FOLDER_METAVARS names a
# folder, any other a file (what --help shows)
OUTPUT_DESTS = ("out", "grid", "save_model")
FOLDER_METAVARS = ("DIR", "INDEX", "SHARDS")


class Parser(argparse.ArgumentParser):
    """argparse, but errors are one line (no usage dump) and exit status 2 via ``main``."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: error: {message} (see '{self.prog} --help')")

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        if action.dest in OUTPUT_DESTS:  # what check_device_and_output checks: option, folder?
            outputs = self.get_default("outputs") or {}
            self.set_defaults(outputs={**outputs, action.dest: (action.option_strings[0],
                                                                 action.metavar in FOLDER_METAVARS)})
        return action


def check_device_and_output(args: argparse.Namespace) -> None:
    """Every command's ``--device`` and outputs (``-o``, ``--grid``, ...), checked before any
    work, so that what the user can fix (no CUDA here, ``-o`` naming a folder where a file goes, a
    place nobody may write) is one line and exit status 2, not an internal error after the work."""
    if getattr(args, "device", None) is not None:
        check_device(args.device)
    for dest, (option, folder) in (getattr(args, "outputs", None) or {}).items():
        value = getattr(args, dest, None)
        if value is not None:
            if not folder and str(value).endswith(("/", os.sep)):  # Path() would drop the slash
                raise AevisionError(f"{option} {value}: names a folder; give a file name")
            check_output(Path(value), folder, option)


def check_device(value: str) -> None:
    import torch

    expected = "cpu, cuda, cuda:N or mps"
    try:
        device = torch.device(value)
    except (RuntimeError, ValueError):
        raise ConfigError("--device", value, expected) from None
    if device.type == "cpu":
        return
    count = {"cuda": torch.cuda.device_count(), "mps": int(torch.backends.mps.is_available())}
    if device.type not in count:
        raise ConfigError("--device", value, expected)
    n, kind = count[device.type], device.type.upper()
    if n == 0:
        raise AevisionError(f"--device {value}: this machine has no {kind} device (use --device cpu)")
    if device.index is not None and device.index >= n:
        raise AevisionError(f"--device {value}: this machine has {n} {kind} device(s), "
                            f"{device.type}:0 to {device.type}:{n - 1}")


def check_output(path: Path, folder: bool, option: str = "-o") -> None:
    """``path`` can be written as a folder (``folder``) or a file: not an existing file / folder of
    the other kind, under a folder this process may write in."""
    if folder and path.exists() and not path.is_dir():
        raise AevisionError(f"{option} {path}: exists and is not a folder")
    if not folder and path.is_dir():
        raise AevisionError(f"{option} {path}: is a folder; give a file name")
    where = path if folder else path.parent
    while not where.exists() and where != where.parent:  # the folders aevision would create
        where = where.parent
    if not where.is_dir():
        raise AevisionError(f"{option} {path}: {where} is not a folder")
    if not os.access(where, os.W_OK | os.X_OK):
        raise AevisionError(f"{option} {path}: cannot write in {where} (permission denied)")


def add_data_arguments(p: argparse.ArgumentParser, inputs: bool = True) -> None:
    """Where images come from: files/folders, or a registered dataset and split."""
    if inputs:
        p.add_argument("inputs", nargs="*", metavar="IMAGES",
                       help="image files or folders (read in sorted order)")
    p.add_argument("--dataset", metavar="NAME", help="a registered dataset instead of files "
                   "(see 'aevision datasets')")
    p.add_argument("--split", choices=("train", "val", "test", "all"), default="test",
                   help="which split of --dataset (default: test): train and val as pretrain splits the "
                   "training images (--seed), all: every image (the training images, then the test ones)")
    p.add_argument("--data-root", metavar="DIR",
                   help="where datasets live (default: $AEVISION_DATA or ~/.cache/aevision)")
    p.add_argument("--limit", type=int, metavar="N",
                   help="use only N images: the first N files (no file after them is read), or N of "
                   "--dataset's images drawn with --seed (in their order; a class-ordered split's first "
                   "images would be one class)")
    p.add_argument("--resize", choices=("stretch", "crop", "pad"),
                   help="bring images of another size to the model's: stretch (the aspect ratio changes), "
                   "crop (centre crop) or pad (black borders); without it they are an error")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the validation split and of --limit's draw (default 0)")
    p.add_argument("--batch-size", type=int, default=512, help="images per forward pass")


# flags of every command that trains on the engine -> their config keys
ENGINE_FLAGS = {"epochs": "train.epochs", "batch_size": "train.batch_size", "lr": "train.lr",
                "seed": "seed", "out": "output_dir", "devices": "train.devices",
                "accelerator": "train.accelerator", "precision": "train.precision"}


def add_engine_arguments(p: argparse.ArgumentParser, default_out: str) -> None:
    """The training flags shared by ``pretrain`` and ``segment`` (see :data:`ENGINE_FLAGS`)."""
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("-o", "--out", metavar="DIR", help=f"output folder (default {default_out})")
    p.add_argument("--devices", help="number of devices, 'auto', or ids like '0,1'")
    p.add_argument("--accelerator", help="cpu, cuda, gpu, mps or auto")
    p.add_argument("--precision", help="32-true (default), bf16-mixed, 16-mixed, ..., or auto: "
                   "bf16-mixed on CPUs and GPUs with native bfloat16, 32-true elsewhere")
    p.add_argument("--deterministic", action="store_true", help="bit-reproducible kernels")
    p.add_argument("--resume", action="store_true",
                   help="continue from OUT/checkpoints/last.ckpt if it exists")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the model already trained in OUT (refused otherwise)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar or epoch lines")
    add_logger_argument(p)


def add_logger_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--logger", action="append", metavar="NAMES",
                   help="where training metrics go: csv, tensorboard, mlflow (repeatable or comma-"
                   "separated; default csv,tensorboard). mlflow: $MLFLOW_TRACKING_URI or ./mlruns, with "
                   "the config as params and the run's files as artifacts")


def logger_names(args: argparse.Namespace) -> list[str] | None:
    """The ``--logger`` values (repeated or comma-separated) as one list, each checked; None when
    not given."""
    from aevision.engine.tracking import LOGGERS

    if not getattr(args, "logger", None):
        return None
    names = [n.strip() for value in args.logger for n in value.split(",") if n.strip()]
    for name in names:
        if name not in LOGGERS:
            raise ConfigError("--logger", name, ", ".join(LOGGERS))
    if not names or len(set(names)) != len(names):
        raise ConfigError("--logger", ",".join(args.logger), f"each of {', '.join(LOGGERS)} at most once")
    return names


def flag_overrides(args: argparse.Namespace, flags: dict[str, str]) -> list[str]:
    """Given flags as KEY=VALUE overrides (flags first, so explicit overrides win)."""
    out = [f"{key}={getattr(args, flag)}" for flag, key in {**ENGINE_FLAGS, **flags}.items()
           if getattr(args, flag, None) is not None]
    if args.deterministic:
        out.append("train.deterministic=true")
    if args.no_progress:
        out.append("train.progress=false")
    loggers = logger_names(args)
    if loggers is not None:
        out.append(f"train.loggers=[{', '.join(loggers)}]")
    return out + list(args.overrides)


def check_flag(args: argparse.Namespace, flag: str, ok: Callable[[Any], bool], expected: str) -> None:
    """The one way a command checks a flag's value: a given value that is not ``ok`` is a
    :class:`ConfigError` naming the flag (``--num: got 0, expected a positive integer``), printed
    as one line with exit status 2."""
    value = getattr(args, flag.lstrip("-").replace("-", "_"))
    if value is not None and not ok(value):
        raise ConfigError(flag, value, expected)


def positive(args: argparse.Namespace, *flags: str) -> None:
    """Each of ``flags`` (when given) is an integer >= 1."""
    for flag in flags:
        check_flag(args, flag, lambda v: v >= 1, "a positive integer")


def load_inputs(args: argparse.Namespace, model: Any) -> Any:
    """The ImageSet named by the command line, at ``model``'s input shape (see :func:`model_inputs`)."""
    return model_inputs(args, model).data


def named_rows(found: Any) -> Any:
    """The images of ``found``; a dataset's rows without files named ``DATASET#i``, ``i`` their index
    in its ``--split all`` (what ``encode`` writes as their indices), not their place in a --limit
    draw (rows read from files keep their file names)."""
    from dataclasses import replace

    if found.indices is None or found.data.files:
        return found.data
    return replace(found.data, files=[f"{found.dataset}#{i}" for i in found.indices.tolist()])


def model_inputs(args: argparse.Namespace, model: Any, model_path: str | None = None) -> Any:
    """The images named by the command line (files and folders, or ``--dataset`` and ``--split``)
    at ``model``'s input shape, as :class:`aevision.data.inputs.Inputs`; what was resized, and
    labels that could not be kept, are said on stderr. ``model_path`` (default: the command's
    ``model``) says how its pretraining split ``--dataset`` into train and val."""
    from aevision.data.inputs import dataset_inputs, file_inputs
    from aevision.models.io import pretraining_carve

    positive(args, "--limit", "--batch-size")
    c, h, w = model.input_shape
    if args.dataset and args.inputs:
        raise AevisionError("give either IMAGES or --dataset, not both")
    if args.dataset and args.resize:
        raise ConfigError("--resize", args.resize, "no --resize with --dataset: a dataset is resized to the "
                          "model's size as pretrain's data.image_size does (stretched)")
    if args.dataset:
        carve = pretraining_carve(model_path or getattr(args, "model", None), args.dataset)
        found = dataset_inputs(args.dataset, args.split, c, (h, w), root=args.data_root, seed=args.seed,
                               limit=args.limit, carve=carve)
    elif args.inputs:
        found = file_inputs(args.inputs, c, (h, w), fit=args.resize, limit=args.limit)
    else:
        raise AevisionError("no input: give image files/folders or --dataset NAME")
    for note in [*found.notes, found.resize_note()]:
        if note:
            print(note, file=sys.stderr)
    return found


def output_path(value: str, suffixes: tuple[str, ...], option: str = "-o") -> Path:
    path = Path(value)
    if path.suffix.lower() not in suffixes:
        raise AevisionError(f"{option} {value}: expected a file ending in {' or '.join(suffixes)}")
    return path
