"""bench/augment.py on a tiny fake MNIST, one seed, a few steps: the results' keys, and ``--reuse``
loads the VAE trained before."""

from __future__ import annotations

from conftest import fake_mnist
from test_bench_common import run_main

KEYS = ["question", "command", "test_accuracy", "gain_over_real", "latent_mix_beats_real_in_seeds", "helps",
        "protocol", "config", "pretraining", "wall_seconds", "machine"]


def test_augment_writes_its_keys_and_reuses_the_vae(bench_script, monkeypatch, tmp_path):
    fake_mnist(tmp_path / "data", n_train=300, n_test=20)
    augment = bench_script("augment")
    monkeypatch.setattr(augment.common, "RESULTS", tmp_path)  # the example grid: not the committed one
    argv = ["--data-root", str(tmp_path / "data"), "--epochs", "1", "--labels-per-class", "2",
            "--synthetic-per-class", "2", "--seeds", "1", "--cnn-steps", "2", "--threads", "1",
            "--runs", str(tmp_path / "runs")]
    first = run_main(augment, monkeypatch, tmp_path / "augment.json", *argv)
    assert list(first) == KEYS
    assert set(first["test_accuracy"]["cnn"]) == {"real", "latent-mix", "pixel-mix"}
    assert {"load_average", "note"} <= set(first["machine"])
    assert "last_epoch" in first["pretraining"]
    assert (tmp_path / "augment_examples.png").is_file()

    again = run_main(augment, monkeypatch, tmp_path / "augment.json", *argv, "--reuse")
    assert again["pretraining"]["reused"] is True
    assert again["pretraining"]["last_epoch"] == first["pretraining"]["last_epoch"]
