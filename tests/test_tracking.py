"""Experiment tracking (engine/tracking.py): ``train.loggers`` / ``--logger``, the config as
parameters, metrics per step and epoch, and the run folder's files as MLflow artifacts."""

from __future__ import annotations

import argparse
import sqlite3

import pytest

import aevision
from aevision.cli import main
from aevision.cli.common import logger_names
from aevision.config import build_config
from aevision.engine import tracking
from aevision.engine.checkpoint import config_mismatch
from aevision.engine.run import run_key
from aevision.errors import AevisionError, ConfigError
from aevision.models.io import saved_run
from conftest import tiny_config


def test_loggers_are_a_checked_list_option():
    assert build_config(overrides=["train.loggers=[csv, mlflow]"]).train.loggers == ["csv", "mlflow"]
    assert build_config().train.loggers == ["csv", "tensorboard"]  # what the engine always wrote
    with pytest.raises(ConfigError, match=r"train\.loggers\[1\]: .*'wandb'.*'csv', 'tensorboard', 'mlflow'"):
        build_config(overrides=["train.loggers=[csv, wandb]"])
    with pytest.raises(ConfigError, match=r"train\.loggers: .*at most once"):
        build_config(overrides=["train.loggers=[csv, csv]"])


def test_logger_flag_is_repeatable_or_comma_separated(capsys):
    def names(*values):
        return logger_names(argparse.Namespace(logger=list(values)))

    assert names("csv,mlflow") == ["csv", "mlflow"]
    assert names("tensorboard", " mlflow ") == ["tensorboard", "mlflow"]
    assert logger_names(argparse.Namespace(logger=None)) is None
    with pytest.raises(ConfigError, match=r"--logger: .*'neptune'.*csv, tensorboard, mlflow"):
        names("csv", "neptune")
    with pytest.raises(ConfigError, match=r"--logger: .*at most once"):
        names("csv,csv")
    assert main(["pretrain", "--dataset", "digits", "--logger", "wandb", "-o", "unused"]) == 2
    assert "--logger" in capsys.readouterr().err


def test_logging_changes_neither_the_run_nor_what_a_resume_accepts():
    a = {"seed": 0, "train": {"lr": 0.001, "loggers": ["csv"]}}
    b = {"seed": 0, "train": {"lr": 0.001, "loggers": ["csv", "mlflow"]}}
    assert run_key(a) == run_key(b) and "loggers" not in run_key(a)["config"]["train"]
    assert run_key(a) != run_key({"seed": 0, "train": {"lr": 0.01, "loggers": ["csv"]}})
    assert config_mismatch(a, b) is None


def test_flat_params_joins_nested_keys_with_dots():
    config = {"seed": 1, "train": {"lr": 0.001, "devices": "auto"},
              "regularizers": [{"name": "l1", "weight": 0.1}], "model": {"hidden": [64, 32], "x": None}}
    assert tracking.flat_params(config) == {
        "seed": 1, "train.lr": 0.001, "train.devices": "auto", "regularizers.0.name": "l1",
        "regularizers.0.weight": 0.1, "model.hidden": "[64, 32]", "model.x": "None"}


def test_mlflow_needs_its_package_and_reads_the_tracking_uri(monkeypatch, tmp_path):
    monkeypatch.setattr(tracking, "_importable", lambda module: module != "mlflow")
    with pytest.raises(AevisionError, match=r"'mlflow' needs the mlflow package.*aevision\[tracking\]"):
        tracking.build_loggers(["csv", "mlflow"], tmp_path, "run")
    monkeypatch.undo()
    uri = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "mine")
    (logger,) = tracking.build_loggers(["mlflow"], tmp_path, "run")
    assert logger._tracking_uri == uri and logger._experiment_name == "mine"


def test_mlflow_receives_params_metrics_and_the_run_files(monkeypatch, tmp_path):
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    out = tmp_path / "myrun"
    cfg = tiny_config(out, train={"epochs": 2, "batch_size": 32, "progress": False, "log_every_n_steps": 2,
                                  "loggers": ["csv", "mlflow"]})
    result = aevision.pretrain(cfg)
    store = tmp_path / "mlruns" / "mlflow.db"  # the local default: ./mlruns
    assert store.is_file() and sqlite3.connect(store).execute("select count(*) from runs").fetchone() == (1,)
    client = MlflowClient(f"sqlite:///{store}")
    (run,) = client.search_runs([client.get_experiment_by_name("aevision").experiment_id])
    assert run.info.run_name == "myrun" and run.info.status == "FINISHED"
    params = run.data.params
    assert params["train.lr"] == "0.001" and params["model.name"] == "dense"
    assert params["data.name"] == "digits"
    assert params["model.code_dim"] == "16" and params["train.loggers"] == "['csv', 'mlflow']"
    epochs = client.get_metric_history(run.info.run_id, "epoch/train_loss")
    assert [m.value for m in epochs] == pytest.approx([h["train_loss"] for h in result.history])
    steps = client.get_metric_history(run.info.run_id, "step/loss")
    assert len(steps) == result.fit.steps // 2 and steps[-1].step == result.fit.steps
    files = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"model.safetensors", "config.json", "summary.json", "history.csv", "run.json"} <= files
    assert not any(f.startswith(("checkpoints", "logs")) for f in files)
    assert list((out / "logs").rglob("metrics.csv"))  # csv alongside
    assert not (out / "logs" / "tensorboard").exists()  # not asked for


def test_benchmark_logger_reaches_its_pretraining_runs():
    from aevision.benchmark import load_benchmark
    from aevision.cli.benchmark import overrides_from
    from aevision.config import DataConfig

    args = argparse.Namespace(labels=None, seeds=None, seed=None, imbalance=None, epochs=None, data_root=None,
                              out=None, retrain=False, resume=False, progress=False, logger=["csv,mlflow"])
    assert overrides_from(args, ["conv"], 1) == ["loggers=[csv, mlflow]"]
    cfg = load_benchmark("quick", overrides_from(args, [], 1))
    name = next(iter(cfg.models))
    assert cfg.pretrain_config(name, DataConfig(name="digits")).train.loggers == ["csv", "mlflow"]
    plain = load_benchmark("quick")
    assert plain.pretrain_config(name, DataConfig(name="digits")).train.loggers == ["csv", "tensorboard"]


def test_pretrain_logger_flag_picks_the_loggers(tmp_path):
    out = tmp_path / "run"
    assert main(["pretrain", "--dataset", "digits", "--limit", "100", "--epochs", "1", "--no-progress",
                 "--logger", "tensorboard", "-o", str(out)]) == 0
    events = list((out / "logs" / "tensorboard").rglob("events.out.tfevents.*"))
    assert events and b"epoch/train_loss" in b"".join(e.read_bytes() for e in events)
    assert not (out / "logs" / "csv").exists()
    assert saved_run(out)[0]["train"]["loggers"] == ["tensorboard"]
