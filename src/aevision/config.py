"""Run configuration: plain dataclasses, loaded from YAML plus ``key=value`` overrides.

A config file mirrors these classes. Model, regularizer and dataset sections hold a ``name`` plus
that builder's own options side by side (``model: {name: conv, channels: [32, 64]}``); the options
are checked against the builder's signature when the run starts, so an unknown key is an error.
Every metric aevision writes is stored next to the ``to_dict()`` of the config that produced it.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
import typing
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from aevision.errors import AevisionError, ConfigError
from aevision.io import read_text
from aevision.validation import check, coerce, known_option

# Lightning's precisions, and auto: bf16-mixed where the CPU or GPU has native bfloat16, else
# 32-true (resolved by the engine, which logs what it picked and why: engine/precision.py)
Precision = Literal[
    "auto", "32-true", "32", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true",
    "transformer-engine",
]


@dataclass
class DataConfig:
    """Which images to train on and how to read them."""

    name: str = "digits"
    root: str | None = None  # where datasets live; default $AEVISION_DATA or ~/.cache/aevision
    image_size: list[int] | None = None  # [H, W] to resize folder images to
    channels: int | None = None  # 1 or 3; folder images are converted to this
    val_fraction: float = 0.1  # carved from the training split, seeded
    limit: int | None = None  # use at most this many training images or videos (quick runs)
    download: bool = True  # torchvision datasets: download when missing and online
    strict: bool = False  # stop at the first unreadable image instead of skipping it
    clip_length: int | None = None  # video data: train on clips of this many consecutive frames
    clip_stride: int | None = None  # frames between the starts of two clips; default clip_length
    options: dict[str, Any] = field(default_factory=dict)  # the dataset builder's own options
    # GiB the decoded training set may take in memory; larger sets (shards:, folders) are streamed.
    # Default: a quarter of the machine's RAM (data/plan.py)
    memory: float | None = None
    workers: int = 2  # loader processes per training process when streaming

    def validate(self, prefix: str = "data") -> None:
        check(0.0 <= self.val_fraction < 1.0, f"{prefix}.val_fraction", self.val_fraction,
              "a fraction in [0, 1)")
        if self.memory is not None:
            check(self.memory >= 0, f"{prefix}.memory", self.memory, "GiB >= 0, or null for 1/4 of RAM")
        check(self.workers >= 0, f"{prefix}.workers", self.workers, "an integer >= 0")
        if self.image_size is not None:
            check(len(self.image_size) == 2 and min(self.image_size) >= 1,
                  f"{prefix}.image_size", self.image_size, "[height, width] of positive integers")
        if self.channels is not None:
            check(self.channels in (1, 3), f"{prefix}.channels", self.channels, "1 or 3")
        if self.limit is not None:
            check(self.limit >= 1, f"{prefix}.limit", self.limit, "a positive integer or null")
        if self.clip_length is not None:
            check(self.clip_length >= 2, f"{prefix}.clip_length", self.clip_length,
                  "an integer >= 2, or null for single frames")
        if self.clip_stride is not None:
            check(self.clip_stride >= 1, f"{prefix}.clip_stride", self.clip_stride,
                  "a positive integer or null")


@dataclass
class ModelConfig:
    """An architecture from the model registry and its options."""

    name: str = "conv"
    reconstruction: Literal["mse", "bce", "l1"] = "mse"  # the reconstruction loss
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class RegularizerConfig:
    """A regularizer from the registry, its weight in the loss, and its options: the keyword-only
    parameters of its constructor, which checks them (the weight too) when the model is built."""

    name: str
    weight: float | None = None  # None: the regularizer's own default weight
    options: dict[str, Any] = field(default_factory=dict)


# Images per validation batch (at least train.batch_size; a clip of T frames counts T): evaluation
# keeps no activations for a backward pass, so it batches wider than training.
VAL_BATCH_SIZE = 256


LoggerName = Literal["csv", "tensorboard", "mlflow"]  # engine/tracking.py


@dataclass
class TrainConfig:
    """How to optimise: the loop, the hardware, the checkpoints."""

    epochs: int = 20
    batch_size: int = 128
    # optimiser steps per epoch: each epoch draws epoch_steps x batch_size samples, cycling a set smaller
    # than that (fresh shuffles) and sampling a larger one; default (null): one pass over the data
    epoch_steps: int | None = None
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd only
    nesterov: bool = False  # sgd only: Nesterov's momentum
    # batch norms' running-statistics momentum while training (PyTorch's sense: running = (1 - m) *
    # running + m * batch; Keras's momentum is 1 - m); null: each layer's own (PyTorch's 0.1). A high
    # sgd rate moves the weights faster than a 0.1 average follows (engine/batchnorm.py)
    batch_norm_momentum: float | None = None
    # after each epoch, recompute every batch norm's running statistics over this many training
    # batches at the epoch's final weights (precise batch norm), before validation picks and the
    # checkpoint stores them; null: the running averages as training left them
    precise_batch_norm: int | None = None
    # after the warmup: constant, cosine or linear decay to zero (linear + warmup: a triangle)
    scheduler: Literal["none", "cosine", "linear"] = "none"
    warmup_steps: int = 0  # linear warmup to lr over the first steps, before the scheduler's decay
    accelerator: Literal["auto", "cpu", "cuda", "gpu", "mps", "tpu"] = "auto"
    devices: int | str = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: Precision = "32-true"
    deterministic: bool = False
    compile: bool = False  # torch.compile the model (pays off on GPUs and long runs)
    tune_allocator: bool = True  # keep freed memory for reuse while training (no per-step page faults; Linux)
    channels_last: bool = False  # NHWC memory layout for conv models
    # which validation quantity picks the weights kept (best epoch) and early stopping watches:
    # "loss" or another loss term (minimised), or a score the task computes on the validation split
    # (segment: miou, mean_dice, pixel_accuracy; maximised). Without a validation split: the training loss
    monitor: str = "loss"
    early_stopping_patience: int | None = None  # epochs without val improvement before stopping
    checkpoint_every_n_steps: int | None = None  # also checkpoint inside epochs
    log_every_n_steps: int = 50
    progress: bool = True
    gradient_clip_norm: float | None = None  # rescale gradients whose global L2 norm exceeds this
    skip_nonfinite: bool = False  # skip batches whose loss is NaN/inf instead of stopping
    auto_batch_size: bool = False  # halve batch_size until a step fits in memory
    max_memory_gb: float | None = None  # CPU runs: fail cleanly instead of being OOM-killed
    max_bad_batches: int = 10  # with skip_nonfinite: stop after this many skipped batches
    # where metrics go (engine/tracking.py): csv and tensorboard under OUT/logs, mlflow to
    # $MLFLOW_TRACKING_URI or ./mlruns (params = the whole config, metrics, the run's files)
    loggers: list[LoggerName] = field(
        default_factory=lambda: ["csv", "tensorboard"])

    def validate(self, prefix: str = "train") -> None:
        check(self.epochs >= 1, f"{prefix}.epochs", self.epochs, "an integer >= 1")
        check(self.batch_size >= 1, f"{prefix}.batch_size", self.batch_size, "an integer >= 1")
        if self.epoch_steps is not None:
            check(self.epoch_steps >= 1, f"{prefix}.epoch_steps", self.epoch_steps,
                  "an integer >= 1, or null for one pass over the data")
        check(self.lr > 0, f"{prefix}.lr", self.lr, "a number > 0")
        check(self.weight_decay >= 0, f"{prefix}.weight_decay", self.weight_decay, "a number >= 0")
        check(0 <= self.momentum < 1, f"{prefix}.momentum", self.momentum, "a number in [0, 1)")
        if self.optimizer != "sgd":  # said, not ignored: the user meant some other run
            because = f"sgd's setting, and this run's optimizer is {self.optimizer}"
            check(self.momentum == 0.9, f"{prefix}.momentum", self.momentum, f"0.9 (unset): {because}")
            check(not self.nesterov, f"{prefix}.nesterov", self.nesterov, f"false (unset): {because}")
        if self.batch_norm_momentum is not None:
            check(0 < self.batch_norm_momentum <= 1, f"{prefix}.batch_norm_momentum",
                  self.batch_norm_momentum, "a number in (0, 1] or null")
        if self.precise_batch_norm is not None:
            check(self.precise_batch_norm >= 1, f"{prefix}.precise_batch_norm", self.precise_batch_norm,
                  "an integer >= 1 (training batches), or null")
        check(not self.nesterov or self.momentum > 0, f"{prefix}.nesterov", self.nesterov,
              "false when momentum is 0 (Nesterov's update needs momentum)")
        check(self.warmup_steps >= 0, f"{prefix}.warmup_steps", self.warmup_steps, "an integer >= 0")
        check(self.num_nodes >= 1, f"{prefix}.num_nodes", self.num_nodes, "an integer >= 1")
        check(self.log_every_n_steps >= 1, f"{prefix}.log_every_n_steps",
              self.log_every_n_steps, "an integer >= 1")
        check((isinstance(self.devices, int) and self.devices >= 1) or self.devices == "auto"
              or (isinstance(self.devices, str) and self.devices.replace(",", "").isdigit()),
              f"{prefix}.devices", self.devices,
              "a positive integer, 'auto', or a comma-separated list of device ids")
        check(isinstance(self.monitor, str) and self.monitor.isidentifier(), f"{prefix}.monitor",
              self.monitor, "the name of a validation loss term or score, e.g. loss")
        if self.early_stopping_patience is not None:
            check(self.early_stopping_patience >= 1, f"{prefix}.early_stopping_patience",
                  self.early_stopping_patience, "an integer >= 1 or null")
        if self.checkpoint_every_n_steps is not None:
            check(self.checkpoint_every_n_steps >= 1, f"{prefix}.checkpoint_every_n_steps",
                  self.checkpoint_every_n_steps, "an integer >= 1 or null")
        check(self.max_bad_batches >= 0, f"{prefix}.max_bad_batches", self.max_bad_batches,
              "an integer >= 0")
        if self.max_memory_gb is not None:
            check(self.max_memory_gb > 0, f"{prefix}.max_memory_gb", self.max_memory_gb,
                  "a number of GiB > 0 or null")
        if self.gradient_clip_norm is not None:
            check(self.gradient_clip_norm > 0, f"{prefix}.gradient_clip_norm", self.gradient_clip_norm,
                  "a number > 0 or null")
        check(len(set(self.loggers)) == len(self.loggers), f"{prefix}.loggers", self.loggers,
              "each of csv, tensorboard, mlflow at most once")


@dataclass
class AugmentConfig:
    """Random changes to each training batch, all off by default: for pretraining and fine-tuning
    (:class:`aevision.data.augment.Augment`, images alone) and segmentation
    (:class:`aevision.tasks.segmentation.augment.SegAugment`, images and masks alike, which does
    the flips, quarter turns, zoom and jitter). Flips suit natural images and clothing, not digits
    or text; zoomed crops and jitter suit photos."""

    shift: float = 0.0  # max translation, as a fraction of the image size (0.1 = 10%), resampled
    # max translation in whole pixels, each way, the edges mirrored: no resampling, so no blur (a
    # shift by a fraction of a pixel interpolates neighbours, which softens 32 x 32 photos)
    translate: int = 0
    rotate: float = 0.0  # max rotation in degrees (either way)
    scale: float = 0.0  # max relative zoom in or out about the centre (0.1 = 90%..110%; zeros padding)
    zoom: float = 1.0  # crop a random window of 1/zoom..1 of each side and resize it back (no padding)
    hflip: bool = False  # mirror left-right with probability 1/2
    vflip: bool = False  # mirror top-bottom with probability 1/2
    rot90: bool = False  # turn by a random multiple of 90 degrees (square images only)
    jitter: float = 0.0  # brightness +-jitter, contrast x(1 +- jitter), per image
    erase: float = 0.0  # probability of blanking one random rectangle (random erasing / cutout)
    erase_size: float = 0.4  # its side, as a fraction of the image side, at most
    noise: float = 0.0  # std of additive Gaussian noise

    def validate(self, prefix: str = "augment", supported: Collection[str] | None = None) -> None:
        """Ranges, and with ``supported`` (the changes a task's augmenter makes) every other change
        off."""
        check(0 <= self.shift <= 0.5, subfield(prefix, "shift"), self.shift, "a fraction in [0, 0.5]")
        check(isinstance(self.translate, int) and self.translate >= 0, subfield(prefix, "translate"),
              self.translate, "a whole number of pixels >= 0")
        check(0 <= self.rotate <= 180, subfield(prefix, "rotate"), self.rotate, "degrees in [0, 180]")
        check(0 <= self.scale < 1, subfield(prefix, "scale"), self.scale, "a fraction in [0, 1)")
        check(self.zoom >= 1.0, subfield(prefix, "zoom"), self.zoom, "a number >= 1 (1: no zoom)")
        check(0 <= self.jitter < 1, subfield(prefix, "jitter"), self.jitter, "a number in [0, 1)")
        check(0 <= self.erase <= 1, subfield(prefix, "erase"), self.erase, "a probability in [0, 1]")
        check(0 < self.erase_size <= 1, subfield(prefix, "erase_size"), self.erase_size,
              "a fraction in (0, 1]")
        check(self.noise >= 0, subfield(prefix, "noise"), self.noise, "a standard deviation >= 0")
        for name in self.changes():
            check(supported is None or name in supported, subfield(prefix, name), getattr(self, name),
                  f"{_NO_CHANGE[name]} (off): this task augments with "
                  + ", ".join(supported or ()) + " only")

    def changes(self) -> list[str]:
        """The options that are on (erase_size is erase's own setting, not a change)."""
        return [name for name, off in _NO_CHANGE.items() if getattr(self, name) != off]

    @property
    def active(self) -> bool:
        return bool(self.changes())


# AugmentConfig's changes, each at the value that turns it off
_NO_CHANGE: dict[str, Any] = {"shift": 0.0, "translate": 0, "rotate": 0.0, "scale": 0.0, "zoom": 1.0,
                              "hflip": False, "vflip": False, "rot90": False, "jitter": 0.0, "erase": 0.0,
                              "noise": 0.0}


@dataclass
class PretrainConfig:
    """Everything ``aevision pretrain`` needs; ``to_dict()`` is written beside every result."""

    seed: int = 0
    output_dir: str = "runs/pretrain"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    regularizers: list[RegularizerConfig] = field(default_factory=list)
    train: TrainConfig = field(default_factory=TrainConfig)
    # random changes to each training batch, which the model then reconstructs (new images to learn
    # from, not a corruption to undo: that is the denoising regularizer)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def validate(self, prefix: str = "") -> None:
        """``prefix``: where this config sits in a larger one (a benchmark's ``models.NAME``)."""
        check(self.seed >= 0, subfield(prefix, "seed"), self.seed, "an integer >= 0")
        self.data.validate(subfield(prefix, "data"))
        self.train.validate(subfield(prefix, "train"))
        self.augment.validate(subfield(prefix, "augment"))
        if self.augment.active and self.data.clip_length:
            raise ConfigError(subfield(prefix, "data.clip_length"), self.data.clip_length,
                              "null when augment is on (augmentation changes each frame of a clip on its "
                              "own, breaking the motion between them)")

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], prefix: str = "") -> PretrainConfig:
        cfg = from_dict(cls, data, prefix)
        cfg.validate(prefix)
        return cfg


# --- generic dataclass <-> dict ----------------------------------------------------------------


def subfield(prefix: str, name: str) -> str:
    """The full path of field ``name`` of the section at ``prefix`` ("" at the top level): what a
    config's ``validate(prefix)`` names in its errors."""
    return f"{prefix}.{name}" if prefix else name


# Classes whose extra keys are builder options, gathered into their ``options`` field.
_OPEN_SECTIONS = (DataConfig, ModelConfig, RegularizerConfig)


def to_dict(obj: Any) -> Any:
    """Dataclass -> plain dict, with builder options flattened beside ``name``."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if f.name == "options" and isinstance(obj, _OPEN_SECTIONS):
                out.update(copy.deepcopy(value))
            else:
                out[f.name] = to_dict(value)
        return out
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def from_dict(cls: type, data: Any, prefix: str) -> Any:
    """Build dataclass ``cls`` from ``data``, checking every key and value."""
    where = prefix or "config"
    if not isinstance(data, dict):
        raise ConfigError(where, data, "a mapping of options")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    options: dict[str, Any] = {}
    for key, value in data.items():
        name = subfield(prefix, str(key))
        if key in fields and not (key == "options" and cls in _OPEN_SECTIONS):
            kwargs[key] = _field_value(name, value, hints[key])
        elif cls in _OPEN_SECTIONS:
            # nested under ``options`` (the dataclass's own layout, which users write too) or flat
            # beside ``name``: the same options either way, each given once
            given = value if key == "options" and isinstance(value, dict) else {key: value}
            for k, v in given.items():
                if k in options:
                    raise ConfigError(f"{where}.{k}", v, "one value (it is set both beside 'name' "
                                      "and under 'options')")
                options[k] = v  # checked against the builder's signature later
        else:
            raise ConfigError(name, value, known_option(str(key), fields))
    if cls in _OPEN_SECTIONS:
        kwargs["options"] = options
    missing = [
        n for n, f in fields.items()
        if n not in kwargs and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(subfield(prefix, missing[0]), None, "a value")
    return cls(**kwargs)


def _field_value(name: str, value: Any, annotation: Any) -> Any:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if dataclasses.is_dataclass(annotation):
        return from_dict(annotation, value, name)
    if origin is list and args and dataclasses.is_dataclass(args[0]):
        if not isinstance(value, list):
            raise ConfigError(name, value, "a list of mappings")
        return [from_dict(args[0], v, f"{name}[{i}]") for i, v in enumerate(value)]
    return coerce(name, value, annotation)


# --- files and overrides -------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's floats: PyYAML follows YAML 1.1, where ``1e-3`` (no dot)
    is the *string* '1e-3' - the way everyone writes a learning rate or a sparsity target."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+(?:\.\d*)?|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."))


def yaml_load(text: str) -> Any:
    """``yaml.safe_load`` reading ``1e-3`` as a number (see :class:`_Loader`)."""
    return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: no arbitrary objects


def load_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(path)
    text = read_text(path, "config file")
    try:
        data = yaml_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise AevisionError(f"{path}: not valid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise AevisionError(f"{path}: expected a mapping of config sections at the top level")
    return data


def parse_value(text: str) -> Any:
    """Read an override value the way YAML would (``3`` -> int, ``[1, 2]`` -> list)."""
    try:
        return yaml_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text


def apply_override(data: dict[str, Any], assignment: str, *,
                   new_key: Callable[[list[str], str], bool] | None = None) -> None:
    """Apply ``a.b.c=value`` to nested dict ``data``; list items are addressed by index.

    By default a missing section or key is created (config files list only what they change).
    With ``new_key``, every section on the path must exist and a key the section lacks is only
    added where ``new_key(section_path, key)`` allows it: a strict mode for fixed configs, where a
    typo would otherwise add a key nothing reads.
    """
    key, sep, raw = assignment.partition("=")
    if not sep or not key.strip():
        raise AevisionError(f"override {assignment!r}: expected KEY=VALUE, e.g. train.epochs=5")
    parts = key.strip().split(".")
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        node = _child(node, part, ".".join(parts[: i + 1]), create=new_key is None)
    last = parts[-1]
    if isinstance(node, list):
        node[_index(node, last, key)] = parse_value(raw)
    elif not isinstance(node, dict):
        raise AevisionError(f"override {assignment!r}: {'.'.join(parts[:-1])} is not a section")
    elif new_key is not None and last not in node and not new_key(parts[:-1], last):
        raise AevisionError(f"override key {key.strip()!r}: no such key (a new key is not allowed here)")
    else:
        node[last] = parse_value(raw)


def _child(node: Any, part: str, path: str, create: bool) -> Any:
    if isinstance(node, list):
        return node[_index(node, part, path)]
    if not isinstance(node, dict):
        raise AevisionError(f"override key {path!r}: parent is not a section")
    if part not in node or node[part] is None:
        if not create:
            raise AevisionError(f"override key {path!r}: no such section")
        node[part] = {}
    return node[part]


def _index(node: list[Any], part: str, path: str) -> int:
    try:
        i = int(part)
    except ValueError:
        raise AevisionError(f"override key {path!r}: {part!r} is not a list index") from None
    if not -len(node) <= i < len(node):
        raise AevisionError(f"override key {path!r}: index {i} out of range (list has {len(node)})")
    return i


def parse_regularizer(spec: str) -> dict[str, Any]:
    """``NAME[:key=value,key=value]`` (the CLI's ``--reg``) -> a regularizer config mapping."""
    name, _, rest = spec.partition(":")
    if not name.strip():
        raise AevisionError(f"--reg {spec!r}: expected NAME[:key=value,...], e.g. l1:weight=1e-3")
    out: dict[str, Any] = {"name": name.strip()}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, sep, raw = item.partition("=")
        if not sep:
            raise AevisionError(f"--reg {spec!r}: {item!r} is not key=value")
        out[key.strip()] = parse_value(raw)
    return out


def merged(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``update``, mappings merged key by key, everything else (lists too)
    replaced: how every config builder layers defaults, a base config, a YAML file. Neither
    argument changes."""
    out = copy.deepcopy(base)
    for k, v in update.items():
        out[k] = merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) \
            else copy.deepcopy(v)
    return out


def build_config(
    path: str | os.PathLike[str] | None = None,
    overrides: list[str] | None = None,
    base: dict[str, Any] | None = None,
    prefix: str = "",
) -> PretrainConfig:
    """Defaults <- ``base`` <- YAML file <- ``overrides``, validated; errors name fields under
    ``prefix`` (where the config sits in a larger one)."""
    data = merged(base or {}, load_yaml(path) if path is not None else {})
    for assignment in overrides or []:
        apply_override(data, assignment)
    return PretrainConfig.from_dict(data, prefix)


def upgraded_config(stored: dict[str, Any]) -> dict[str, Any]:
    """A pretraining config saved by an earlier run, as this version writes it: read back through
    :func:`build_config`, so fields added to aevision since it was saved take their defaults."""
    return build_config(base=stored).to_dict()

