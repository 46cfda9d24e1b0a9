"""``aevision demo``: the whole promise in under three minutes, offline, on the embedded digits.

The demo is the benchmark's ``quick`` preset (``aevision/presets/quick.yaml``), run by the same
code as ``aevision benchmark``: one pipeline, not two. It pretrains five autoencoder variants on
the unlabelled training images, then asks the question users care about: with few labels, do
their features beat raw pixels and PCA under the same linear probe and kNN, and does fine-tuning
beat the same network trained from scratch? Every number is reported, whichever method wins,
averaged over seeds, on a test split that nothing was tuned on.
"""

from __future__ import annotations

from pathlib import Path

from aevision.benchmark import BenchmarkResult, load_benchmark, run_benchmark
from aevision.io import write_json

PRESET = "quick"


def demo_overrides(out_dir: str | Path = "runs/demo", *, seed: int = 0, epochs: int | None = None,
                   seeds: int | None = None, finetune_epochs: int | None = None,
                   data_root: str | None = None) -> list[str]:
    """The preset's settings that the demo's options change, as ``KEY=VALUE`` overrides."""
    preset = load_benchmark(PRESET)
    out = [f"output_dir={out_dir}", f"seed={seed}"]
    if epochs is not None:
        out += [f"models.{m}.train.epochs={epochs}" for m in preset.models]
    if seeds is not None:
        out.append(f"seeds={seeds}")
    if finetune_epochs is not None:
        out.append(f"protocols.finetune.train.epochs={finetune_epochs}")
    if data_root is not None:
        out += [f"datasets.{i}.root={data_root}" for i in range(len(preset.datasets))]
    return out


def run_demo(out_dir: str | Path = "runs/demo", *, seed: int = 0, epochs: int | None = None,
             seeds: int | None = None, finetune_epochs: int | None = None, data_root: str | None = None,
             verbose: bool = True) -> BenchmarkResult:
    """Run the ``quick`` preset into ``out_dir``; ``None`` keeps the preset's value."""
    overrides = demo_overrides(out_dir, seed=seed, epochs=epochs, seeds=seeds,
                               finetune_epochs=finetune_epochs, data_root=data_root)
    cfg = load_benchmark(PRESET, overrides)
    command = "aevision benchmark quick " + " ".join(overrides)
    result = run_benchmark(cfg, verbose=verbose, command=command)
    write_metrics(result)
    return result


METRIC_KEYS = ("dataset", "protocol", "method", "kind", "budget", "imbalance", "loss", "n_seeds",
               "accuracy_mean", "accuracy_std", "balanced_accuracy_mean", "balanced_accuracy_std",
               "macro_f1_mean", "macro_f1_std")


def write_metrics(result: BenchmarkResult) -> Path:
    """``metrics.json``: the demo's numbers at a glance (every row's test scores, mean and std over
    seeds, and the verdicts), with the config and command that produced them; the leaderboard
    files beside it hold every run."""
    board = result.board
    path = Path(result.out_dir) / "metrics.json"
    write_json(path, {
        "config": board.get("config"), "run": board.get("run"),
        "metrics": [{k: row.get(k) for k in METRIC_KEYS} for row in board["rows"]],
        "verdicts": board.get("verdicts"),
    })
    return path
