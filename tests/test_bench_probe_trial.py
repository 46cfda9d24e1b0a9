"""bench/probe_trial.py on digits (the quick preset, one epoch): validation only, the trained model
and its untrained twin probed by the same probe, and ``--reuse`` reads the pretraining back."""

from __future__ import annotations

from test_bench_common import run_main


def test_probe_trial_scores_the_model_and_its_untrained_twin_on_validation(bench_script, monkeypatch,
                                                                          tmp_path, one_thread):
    trial = bench_script("probe_trial")
    argv = ["quick", "conv", "models.conv.train.epochs=1", "models.conv.model.channels=[8, 16]",
            "--runs", str(tmp_path / "runs")]
    first = run_main(trial, monkeypatch, tmp_path / "t.json", *argv)
    assert first["val"] > 0 and "test" not in first
    assert first["entry"]["model"]["channels"] == [8, 16]  # the overrides reached the model
    for side in ("trained", "untrained"):
        probe = first[side]
        assert 0.1 < probe["val_accuracy"] <= 1 and probe["val_accuracy"] == max(probe["scores"].values())
        assert probe["feature_dim"] == first["trained"]["feature_dim"]
    assert first["trained"]["scores"] != first["untrained"]["scores"]  # other weights, other features
    assert first["pretraining"]["epochs"] == 1 and "reused" not in first["pretraining"]
    assert first["pretraining"]["train_cpu_seconds"] > 0
    again = run_main(trial, monkeypatch, tmp_path / "t.json", *argv, "--reuse")
    # read back: the engine's record of the training's CPU time, not this process's
    assert again["pretraining"]["reused"] is True
    assert again["pretraining"]["train_cpu_seconds"] == first["pretraining"]["train_cpu_seconds"]
    assert again["trained"] == first["trained"] | {"seconds": again["trained"]["seconds"]}
