"""``aevision demo`` is the ``quick`` benchmark preset (run end to end in test_benchmark.py)."""

from __future__ import annotations

from pathlib import Path

import aevision.demo
from aevision.benchmark import BenchmarkResult
from aevision.cli import main


def test_demo_runs_the_quick_preset_with_its_options(tmp_path, monkeypatch):
    seen = {}

    def fake_run(cfg, *, verbose=True, command=None):
        seen.update(cfg=cfg, command=command)
        row = {"dataset": "digits", "protocol": "linear", "method": "conv", "budget": "all",
               "accuracy_mean": 0.9, "accuracy_std": 0.01, "accuracy_runs": [0.89, 0.91]}
        return BenchmarkResult(Path(cfg.output_dir), {"rows": [row], "records": [],
                                                      "config": {"seed": cfg.seed}, "verdicts": []})

    monkeypatch.setattr(aevision.demo, "run_benchmark", fake_run)
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--epochs", "3", "--seeds", "2", "--finetune-epochs", "4",
                 "--seed", "7"]) == 0
    cfg = seen["cfg"]
    assert cfg.name == "quick" and cfg.output_dir == str(out) and cfg.seed == 7 and cfg.seeds == 2
    assert {m["train"]["epochs"] for m in cfg.models.values()} == {3}
    assert cfg.protocols.finetune.train.epochs == 4
    assert cfg.datasets[0].name == "digits"  # offline
    assert seen["command"].startswith("aevision benchmark quick output_dir=")
    import json

    metrics = json.loads((out / "metrics.json").read_text())  # the numbers with their config
    assert metrics["config"] == {"seed": 7}
    assert metrics["metrics"][0]["method"] == "conv" and metrics["metrics"][0]["accuracy_mean"] == 0.9
    assert main(["demo", "--epochs", "0"]) == 2  # a one-line error, not a traceback


def test_demo_defaults_are_the_preset():
    from aevision.benchmark import load_benchmark

    preset = load_benchmark("quick")
    cfg = load_benchmark("quick", aevision.demo.demo_overrides("runs/demo"))
    assert cfg.models == preset.models and cfg.seeds == preset.seeds == 3
    assert cfg.output_dir == "runs/demo"
