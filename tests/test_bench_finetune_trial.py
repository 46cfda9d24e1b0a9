"""bench/finetune_trial.py on digits (the quick preset, one epoch each): validation only, the
pretrained model and the same network from scratch fine-tuned with the preset's recipes, and
``--reuse`` reads the fine-tunes back; a scratch-only trial skips the pretraining."""

from __future__ import annotations

from test_bench_common import run_main


def test_finetune_trial_fine_tunes_pretrained_and_scratch_on_validation(bench_script, monkeypatch, tmp_path,
                                                                         one_thread):
    trial = bench_script("finetune_trial")
    argv = ["quick", "conv", "models.conv.train.epochs=1", "models.conv.model.channels=[8, 16]",
            "protocols.finetune.train.epochs=2", "--runs", str(tmp_path / "runs")]
    first = run_main(trial, monkeypatch, tmp_path / "t.json", *argv)
    assert first["val"] > 0 and "test" not in first
    assert {init: r["init"] for init, r in first["recipe"].items()} == {"pretrained": "pretrained",
                                                                         "scratch": "scratch"}
    for init in ("pretrained", "scratch"):
        run = first[init]
        assert 0.1 < run["val_accuracy"] <= 1 and run["epochs"] == len(run["history"]) >= 2
        assert 1 <= run["best_epoch"] <= 2
        last = [r for r in run["history"] if r["phase"] == run["history"][-1]["phase"]]  # the kept phase
        kept = next(r for r in last if r["epoch"] == run["best_epoch"])
        assert kept["val_loss"] == min(r["val_loss"] for r in last)  # the benchmark's rule
    assert first["pretrained"]["history"] != first["scratch"]["history"]  # other starting weights
    assert first["pretraining"]["epochs"] == 1 and first["pretraining"]["train_cpu_seconds"] > 0
    again = run_main(trial, monkeypatch, tmp_path / "t.json", *argv, "--reuse", "--init", "scratch")
    assert again["pretraining"] is None and "pretrained" not in again  # a scratch trial pretrains nothing
    assert again["scratch"]["val_accuracy"] == first["scratch"]["val_accuracy"]  # read back, not retrained
    assert again["scratch"]["cpu_seconds"] < first["scratch"]["cpu_seconds"]
