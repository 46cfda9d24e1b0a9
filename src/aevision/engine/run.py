"""One run's life, the same for every training run (pretraining, segmenters, fine-tunes, benches).

    run = Run(out_dir, run_key(config, data=fingerprint(images), init=weights_sha256(path)))
    done = run.finished()      # the identical run, already finished here: reuse it
    fit = run.fit(trainer, model, train, val, config, reuse=...)  # start: record the key, resume
                               # only a run of this key; then train, timed
    run.finish(lambda folder: save_model(model, folder), {"summary.json": {...}})

A run is identified by its **key**: the normalised config, a fingerprint of the data it trains on
(:func:`aevision.data.sources.fingerprint`), a hash of the weights it starts from, and aevision's
version. ``run.json`` in the run folder records the key and the state (``started``, then
``finished`` once every output is written, last of all), so a run killed at any point is never
taken for finished, and a checkpoint is resumed automatically only by a run of the very same key:
a run whose data or starting weights changed (which the checkpoint's own config cannot see)
starts afresh.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from aevision.data.batches import TensorBatches
from aevision.engine.checkpoint import LAST, comparable
from aevision.engine.loop import FitResult, Trainer, Validate
from aevision.engine.resources import peak_rss_mib
from aevision.engine.tracking import log_artifacts
from aevision.errors import AevisionError
from aevision.io import file_sha256, read_json, write_json
from aevision.models.io import WEIGHTS
from aevision.provenance import __version__, machine_info

RECORD = "run.json"

Upgrade = Callable[[dict[str, Any]], dict[str, Any]]


def run_key(config: dict[str, Any], *, data: str | None = None, init: Any = None,
            **extra: Any) -> dict[str, Any]:
    """What makes two runs the same run, as JSON reads it back (tuples are lists).

    ``config``: the run's config without where it is written (``output_dir`` is dropped: the same
    run in a moved folder is still the same run) nor how it reports (:data:`PRESENTATION`, in any
    ``train`` section at any depth: a benchmark's key nests its models' pretraining configs), nor
    settings added since runs were stored, at their neutral value (:data:`LATER_SETTINGS`);
    ``data``: a fingerprint of the data passed in (:func:`aevision.data.sources.fingerprint`);
    ``init``: what the weights start from
    (:func:`weights_sha256`, or an architecture spec for a run that only takes a network's shape);
    ``extra``: anything else the outputs depend on.
    """
    config = {k: v for k, v in config.items() if k != "output_dir"}
    key = {"aevision": __version__, "config": config, "data": data, "init": init, **extra}
    return comparable(json.loads(json.dumps(key, default=str)))


def digest(key: dict[str, Any]) -> str:
    """A short stable name for a key (a file name for a stored result)."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]


def weights_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a saved model's weights (a run folder or a ``.safetensors`` file)."""
    path = Path(path)
    return file_sha256(path / WEIGHTS if path.is_dir() else path)


def refuse_replacing(out_dir: str | os.PathLike[str], *, allowed: bool) -> None:
    """A one-line error when ``out_dir`` holds a trained model and replacing it was not asked for
    (``--resume``, ``--overwrite``, or a benchmark's ``reuse``). Callers check before loading data,
    so that a user is not told only after minutes of decoding."""
    if not allowed and (Path(out_dir) / WEIGHTS).is_file():
        raise AevisionError(f"{out_dir}: holds a trained model already; pass --resume to continue its "
                            f"training, --overwrite to replace it, or choose another output folder")


class Run:
    """A run folder and the key of the run that belongs in it (see the module docstring)."""

    def __init__(self, out_dir: str | os.PathLike[str], key: dict[str, Any], *,
                 upgrade: Upgrade | None = None):
        self.out_dir = Path(out_dir)
        self.key = key
        self.upgrade = upgrade  # reads a stored config as this version writes it (added fields)
        self.writer = True  # under DDP only the global-zero process writes (fit sets it)
        self.loggers: list[Any] = []  # the trainer's (fit sets them): MLflow receives the outputs
        self.timing: dict[str, Any] = {}

    # --- what the folder holds ---------------------------------------------------------------

    def record(self) -> dict[str, Any] | None:
        """``run.json``, or None when absent or unreadable (then no run here counts as identical)."""
        try:
            rec = read_json(self.out_dir / RECORD, "run record")
        except AevisionError:
            return None
        return rec if isinstance(rec, dict) else None

    def same_key(self, rec: dict[str, Any] | None) -> bool:
        if rec is None or not isinstance(rec.get("key"), dict):
            return False
        stored = comparable(rec["key"])  # a record written before a setting counted as such
        if self.upgrade is not None and isinstance(stored.get("config"), dict):
            try:
                stored["config"] = run_key(self.upgrade(stored["config"]))["config"]
            except (AevisionError, TypeError, ValueError):
                return False
        return stored == self.key

    def finished(self) -> dict[str, Any] | None:
        """The record of the identical run when it finished here (every output written), else None."""
        rec = self.record()
        return rec if rec is not None and rec.get("state") == "finished" and self.same_key(rec) else None

    # --- the life ----------------------------------------------------------------------------

    def start(self, *, resume: bool = False, reuse: bool = False, overwrite: bool = False) -> bool:
        """Record that this run starts here; return whether training continues from the last
        checkpoint. ``resume`` (the user's ``--resume``) always tries (the engine checks the
        checkpoint's config); ``reuse`` resumes automatically, but only a run of this very key. A
        checkpoint that will not be resumed is deleted, so that no later run takes it for its own.

        A folder that holds a trained model is never replaced silently: only with ``overwrite``,
        ``resume``, or ``reuse`` (a benchmark's own folders, whose runs it replaces when their
        inputs change)."""
        last = self.out_dir / "checkpoints" / LAST
        refuse_replacing(self.out_dir, allowed=overwrite or resume or reuse)
        rec = self.record()
        if resume:
            self.check_resumable(rec)
        same = self.same_key(rec)
        go_on = resume or (reuse and same and last.is_file())
        if self.writer:
            if not go_on:
                last.unlink(missing_ok=True)
            self._write_record("started")
        return go_on

    def check_resumable(self, rec: dict[str, Any] | None) -> None:
        """Refuse to ``--resume`` a run that started from other data or other weights: the
        checkpoint's config (which the engine compares) cannot see either, and the run would go on
        over other images (its best epoch chosen across two validation sets) or record starting
        weights it never had."""
        stored = rec.get("key") if rec is not None else None
        if not isinstance(stored, dict):
            return
        stored = comparable(stored)
        if stored.get("data") is not None and stored["data"] != self.key.get("data"):
            raise AevisionError(f"--resume: the run in {self.out_dir} trained on other data (its images, "
                                f"labels or split changed since); run without --resume (--overwrite) "
                                f"to start afresh")
        if stored.get("init") != self.key.get("init"):
            then = "random weights, not the ones given now" if stored.get("init") is None else \
                "weights not given now" if self.key.get("init") is None else "other weights"
            raise AevisionError(f"--resume: the run in {self.out_dir} started from {then} (--init-from, "
                                f"--encoder); resume with the ones it started from, or run without "
                                f"--resume (--overwrite) to start afresh")

    def fit(self, trainer: Trainer, model: nn.Module, train: TensorBatches, val: TensorBatches | None,
            run_config: dict[str, Any], *, resume: bool = False, reuse: bool = False, overwrite: bool = False,
            upgrade_config: Upgrade | None = None, validate: Validate | None = None) -> FitResult:
        """:meth:`start` the run (from ``trainer``'s global-zero process: the one that writes),
        then ``trainer.fit`` (``validate``: see :meth:`Trainer.fit`), timed. A resumed run's
        process saw only the epochs after the resume: its wall and CPU times are then the engine's
        sums over all epochs' training (checkpointed with the epoch; validation not included)."""
        self.writer, self.loggers = trainer.fabric.is_global_zero, list(trainer.fabric.loggers)
        go_on = self.start(resume=resume, reuse=reuse, overwrite=overwrite)
        t0, c0 = time.time(), time.process_time()
        fit = trainer.fit(model, train, val, run_config, resume=go_on, upgrade_config=upgrade_config,
                          validate=validate)
        if fit.resumed_from is not None:
            self.timing = {"wall_seconds": fit.train_seconds, "cpu_seconds": fit.train_cpu_seconds,
                           "resumed": True}
        else:
            self.timing = {"wall_seconds": round(time.time() - t0, 3),
                           "cpu_seconds": round(time.process_time() - c0, 3), "resumed": False}
        return fit

    def finish(self, save: Callable[[Path], Any], files: dict[str, dict[str, Any]]) -> None:
        """Write the weights (``save(folder)``), then each JSON file of ``files`` with the run's
        provenance added (timing, peak RSS, machine), then mark the run finished (``run.json``
        holds the key); then hand the folder's files to the tracking loggers (MLflow artifacts)."""
        if not self.writer:
            return
        save(self.out_dir)
        provenance = {**self.timing, "peak_rss_mib": peak_rss_mib(), "machine": machine_info()}
        for name, content in files.items():
            write_json(self.out_dir / name, {**content, **provenance})
        self._write_record("finished", **self.timing)
        log_artifacts(self.loggers, self.out_dir)

    def _write_record(self, state: str, **extra: Any) -> None:
        write_json(self.out_dir / RECORD, {"key": self.key, "state": state,
                                           "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                           **extra})
