"""Experiment tracking: the loggers a training run writes to (``train.loggers``).

Lightning's loggers, which Fabric drives (``fabric.log_dict`` reaches each of them):

- ``csv``: ``OUT/logs/csv/version_N/metrics.csv``;
- ``tensorboard``: ``OUT/logs/tensorboard/version_N`` (skipped with a warning when neither
  tensorboard nor tensorboardX is installed);
- ``mlflow``: ``lightning.pytorch.loggers.MLFlowLogger`` (a Fabric logger too), in the store
  ``MLFLOW_TRACKING_URI`` names, else a local ``mlruns/`` in the working directory (an SQLite
  database, ``mlruns/mlflow.db``, and ``mlruns/artifacts``: MLflow 3 refuses new file stores);
  the experiment is ``MLFLOW_EXPERIMENT_NAME`` or ``aevision``, the run is named after the run
  folder. It needs the ``tracking`` extra (``pip install 'aevision[tracking]'``).

What each receives: the engine's metrics per step (``step/<term>``) and per epoch
(``epoch/train_<term>``, ``epoch/val_<term>``); MLflow also the whole run config as parameters
(:func:`flat_params`: nested keys joined with dots) and, once the run is finished, the files of the
run folder (the model, its config, the summary, history and run record) as artifacts
(:func:`log_artifacts`). TensorBoard shows parameters only beside an ``hp_metric``, which the
engine does not invent, and Fabric's CSV logger keeps none: the config is in the run folder.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, get_args

from aevision.config import LoggerName
from aevision.errors import AevisionError

log = logging.getLogger(__name__)

LOGGERS: tuple[str, ...] = get_args(LoggerName)
EXPERIMENT = "aevision"
LOCAL_STORE = "mlruns"


def build_loggers(names: Iterable[str], log_dir: Path, run_name: str) -> list[Any]:
    """The Fabric loggers ``names`` asks for (see the module docstring), writing under ``log_dir``."""
    loggers: list[Any] = []
    for name in names:
        if name == "csv":
            from lightning.fabric.loggers import CSVLogger

            loggers.append(CSVLogger(str(log_dir), name="csv"))
        elif name == "tensorboard":
            found = tensorboard_logger(log_dir)
            if found is not None:
                loggers.append(found)
        elif name == "mlflow":
            loggers.append(mlflow_logger(run_name))
        else:
            raise AevisionError(f"train.loggers: unknown logger {name!r}; expected {', '.join(LOGGERS)}")
    return loggers


def tensorboard_logger(log_dir: Path) -> Any:
    """Fabric's TensorBoardLogger, or None (with a warning) without tensorboard or tensorboardX."""
    try:
        from lightning.fabric.loggers import TensorBoardLogger
    except ImportError:
        return None
    if not any(_importable(m) for m in ("tensorboard", "tensorboardX")):
        log.warning("train.loggers: tensorboard is not installed, so no TensorBoard logs "
                    "(pip install 'aevision[tracking]')")
        return None
    return TensorBoardLogger(str(log_dir), name="tensorboard", default_hp_metric=False)


def mlflow_logger(run_name: str) -> Any:
    """An MLFlowLogger for ``MLFLOW_TRACKING_URI``, else for the local ``mlruns/``."""
    if not _importable("mlflow"):
        raise AevisionError("train.loggers: 'mlflow' needs the mlflow package; install it with "
                            "pip install 'aevision[tracking]'")
    from lightning.pytorch.loggers import MLFlowLogger

    uri, artifacts = os.environ.get("MLFLOW_TRACKING_URI"), None
    if not uri:
        store = Path(LOCAL_STORE).resolve()
        store.mkdir(parents=True, exist_ok=True)
        uri, artifacts = f"sqlite:///{store / 'mlflow.db'}", str(store / "artifacts")
    return MLFlowLogger(experiment_name=os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT,
                        run_name=run_name, tracking_uri=uri, artifact_location=artifacts)


def flat_params(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as one level: ``{"train": {"lr": 0.001}}`` -> ``{"train.lr": 0.001}``; a
    list of sections (regularizers) by index (``regularizers.0.name``), other lists as text."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            value = {str(i): v for i, v in enumerate(value)}
        if isinstance(value, dict):
            out.update(flat_params(value, f"{name}."))
        else:
            out[name] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return out


def log_params(loggers: Iterable[Any], config: dict[str, Any]) -> None:
    """The whole run config, flattened, as each logger's hyperparameters (those that keep them)."""
    params = flat_params(config)
    for logger in loggers:
        try:
            logger.log_hyperparams(params)
        except NotImplementedError:
            continue


def is_mlflow(logger: Any) -> bool:
    module = sys.modules.get("lightning.pytorch.loggers.mlflow")
    return module is not None and isinstance(logger, module.MLFlowLogger)


def log_artifacts(loggers: Iterable[Any], folder: Path) -> None:
    """The files directly in the run ``folder`` (model, config, summary, history, run record; not
    the checkpoints or logs) as artifacts of each MLflow run."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    for logger in loggers:
        if is_mlflow(logger) and logger.run_id is not None:
            for path in files:
                logger.experiment.log_artifact(logger.run_id, str(path))


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
