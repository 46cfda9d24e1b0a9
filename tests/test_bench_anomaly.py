"""bench/anomaly.py on digits, one held-out class, one epoch: the results' keys, and ``--reuse``
reads the model back only when it was trained as configured."""

from __future__ import annotations

from test_bench_common import run_main

KEYS = ["claim", "command", "mean_auroc", "per_class_auroc", "score", "target_met", "mean_auroc_by_score",
        "per_class", "protocol", "config", "wall_seconds", "machine"]


def run(anomaly, monkeypatch, tmp_path, *extra: str) -> dict:
    return run_main(anomaly, monkeypatch, tmp_path / "anomaly.json", "--dataset", "digits", "--classes", "3",
                    "--epochs", "1", "--threads", "1", "--runs", str(tmp_path / "runs"), *extra)


def test_anomaly_writes_its_keys_and_reuses_only_the_same_training(bench_script, monkeypatch, tmp_path):
    anomaly = bench_script("anomaly")
    first = run(anomaly, monkeypatch, tmp_path)
    assert list(first) == KEYS
    assert {"load_average", "note"} <= set(first["machine"])
    assert first["command"].startswith("AEVISION_DATA=/work/shared/datasets python bench/anomaly.py ")
    assert "reused" not in first["per_class"]["3"]["fit"]

    again = run(anomaly, monkeypatch, tmp_path, "--reuse")
    assert again["per_class"]["3"]["fit"]["reused"] is True
    assert again["per_class"]["3"]["auroc"] == first["per_class"]["3"]["auroc"]

    # another training (seed): trained again, not read back
    other = run(anomaly, monkeypatch, tmp_path, "--reuse", "--seed", "1")
    assert "reused" not in other["per_class"]["3"]["fit"]
