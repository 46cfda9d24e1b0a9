"""bench/mae.py on digits with a couple of epochs: the results' keys, and ``--reuse`` loads the
model pretrained before."""

from __future__ import annotations

from test_bench_common import run_main

KEYS = ["question", "command", "linear_probe_test_accuracy", "probe_beats_untrained_twin",
        "finetune_test_accuracy", "finetune_beats_scratch", "protocol", "config", "pretraining",
        "wall_seconds", "machine"]


def test_mae_bench_writes_its_keys_and_reuses_the_model(bench_script, monkeypatch, tmp_path, one_thread):
    mae = bench_script("mae")
    argv = ["--epochs", "1", "--finetune-epochs", "1", "--runs", str(tmp_path / "runs")]
    first = run_main(mae, monkeypatch, tmp_path / "mae.json", *argv)
    assert list(first) == KEYS
    assert set(first["linear_probe_test_accuracy"]) == {"mae", "untrained_twin", "pixels"}
    assert all(0 < a <= 1 for a in first["finetune_test_accuracy"].values())
    assert first["pretraining"]["epochs"] == 1
    again = run_main(mae, monkeypatch, tmp_path / "mae.json", *argv, "--reuse")
    assert again["pretraining"]["reused"] is True
    assert again["linear_probe_test_accuracy"]["mae"] == first["linear_probe_test_accuracy"]["mae"]
