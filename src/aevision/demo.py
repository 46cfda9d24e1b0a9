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
    return run_benchmark(cfg, verbose=verbose, command=command)
