"""Training checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint holds the model and optimizer state, the loop position (epoch, batch, step), the RNG
state and the bookkeeping (best validation loss, history). It contains only tensors, numbers,
strings, lists and dicts, so it is read back with ``torch.load(weights_only=True)``: a checkpoint
file that smuggles in a pickled object is refused, never executed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aevision.errors import AevisionError
from aevision.io import torch_load, torch_save

LAST = "last.ckpt"
BEST = "best.safetensors"


@dataclass
class LoopState:
    """Where the loop is; all plain numbers so checkpoints stay pickle-free."""

    epoch: int = 0  # the epoch in progress (or next to start)
    batch: int = 0  # batches of that epoch already done
    step: int = 0  # optimizer steps so far
    best_val: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0  # epochs since the last improvement (early stopping)
    bad_batches: int = 0  # batches skipped for a non-finite loss
    sums: dict[str, float] = field(default_factory=dict)  # loss sums of the epoch in progress
    seconds: float = 0.0  # training wall time of the epoch in progress
    cpu_seconds: float = 0.0  # the process's CPU time (all threads) training that epoch
    history: list[dict[str, Any]] = field(default_factory=list)


def save_checkpoint(path: Path, *, model: dict[str, Any], optimizer: dict[str, Any],
                    scheduler: dict[str, Any] | None, loop: LoopState, rng: dict[str, Any],
                    config: dict[str, Any]) -> None:
    torch_save(path, {
        "format": 1,
        "model": model,
        "optimizer": optimizer,
        "scheduler": scheduler,
        "loop": asdict(loop),
        "rng": rng,
        "config": config,
    })


def load_checkpoint(path: Path) -> dict[str, Any]:
    ckpt = torch_load(path, "checkpoint")
    if not isinstance(ckpt, dict) or ckpt.get("format") != 1 or "model" not in ckpt:
        raise AevisionError(f"{path}: not an aevision training checkpoint")
    ckpt["loop"] = LoopState(**ckpt["loop"])
    return ckpt


# Config sections that may change between a run and its resumption without changing what is
# being trained (more epochs, another output folder); the PRESENTATION settings (progress display,
# loggers) never reach the comparison (:func:`comparable`).
_RESUMABLE_CHANGES = {"train.epochs", "train.early_stopping_patience",
                      "train.log_every_n_steps", "train.checkpoint_every_n_steps", "output_dir",
                      "train.devices", "train.accelerator", "train.num_nodes", "train.strategy",
                      "train.skip_nonfinite", "train.max_bad_batches", "data.root",
                      "data.download", "train.max_memory_gb", "train.tune_allocator"}


def config_mismatch(saved: dict[str, Any], current: dict[str, Any], prefix: str = "") -> str | None:
    """The first setting that differs in a way that makes resuming wrong, as 'key: a vs b'."""
    if not prefix:
        saved, current = comparable(saved), comparable(current)
    for key in sorted(set(saved) | set(current)):
        name = f"{prefix}{key}"
        if name in _RESUMABLE_CHANGES:
            continue
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found = config_mismatch(a, b, f"{name}.")
            if found:
                return found
        elif a != b:
            return f"{name}: {a!r} in the checkpoint vs {b!r} now"
    return None


# train settings that change what a run prints or where its metrics go, never what it computes:
# rerunning with --progress must find the run it already finished
PRESENTATION = ("loggers", "progress")

# settings added after runs were stored, each at the value that computes what the run computed
# before the setting existed: keys and resume checks leave a setting of that name out, in any section,
# at that value, so a run stored by an earlier version (a benchmark's outcomes, hours of CPU) is
# still the same run. A new setting that keys see belongs here, with its neutral value, under a name
# no other setting has.
LATER_SETTINGS: dict[str, Any] = {
    "momentum": 0.9, "nesterov": False,  # train (sgd's)
    "batch_norm_momentum": None, "precise_batch_norm": None,  # train
    "translate": 0,  # augment
    "head_lr_scale": 1.0,  # finetune
}


def comparable(node: Any) -> Any:
    """``node`` (JSON data) as run keys and resumed checkpoints compare it: :data:`PRESENTATION`
    dropped from every ``train`` section, and :data:`LATER_SETTINGS` at their neutral value from
    every mapping."""
    if isinstance(node, list):
        return [comparable(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: comparable(v) for k, v in node.items() if not _neutral(k, v)}
    if isinstance(out.get("train"), dict):
        out["train"] = {k: v for k, v in out["train"].items() if k not in PRESENTATION}
    return out


def _neutral(name: str, value: Any) -> bool:
    """A later setting at the value that changes nothing (of that type: 0 is not False)."""
    return (name in LATER_SETTINGS and value == LATER_SETTINGS[name]
            and type(value) is type(LATER_SETTINGS[name]))
