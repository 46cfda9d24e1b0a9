#!/usr/bin/env python
"""Training throughput of aevision's engine vs a plain PyTorch loop, same model, same run.

For each model (the peer documents' M1, M2, M3, the default ``conv`` and ``conv`` + contractive),
a fresh child process (so peak RSS is per model) alternates a plain PyTorch loop and aevision's
Trainer (Fabric, TensorBatches, checkpoints, NaN guard, logging) on the same random data, and
reports images/s (median of timed epochs; epoch 1 is warm-up), their ratio, peak RSS and the
fraction of step time spent waiting for data. Also: ``encode`` of 60k MNIST-sized images with the
default conv encoder, the contractive penalty's cost (stochastic JVP vs exact Jacobian), and the
peak RSS of ``aevision pretrain`` on real MNIST (from ``--data-root`` / ``$AEVISION_DATA``; skipped,
with the reason, where MNIST is not there).

    python bench/throughput.py                 # everything, writes bench/results/throughput.json
    python bench/throughput.py --model M1      # one model, JSON on stdout
    python bench/throughput.py --peers ../shared/peers --tf-python /path/to/tf-venv/bin/python
    python bench/throughput.py --device cuda   # GPU: bench/results/throughput_gpu/throughput_gpu.json

On the CPU each model runs at each precision of ``--variants`` (default: fp32 and bf16-mixed, and
for M3 bf16 + channels_last, which paid there in a short test and not for conv), both loops
alike; the model's ``images_per_s`` is its best precision's, ``fp32_images_per_s`` beside it.
On a GPU each model runs in three variants: fp32, bf16 autocast + channels_last (a no-op for the
dense M1 and M2) and bf16 + ``torch.compile``; with larger datasets (an epoch of the CPU sizes
takes milliseconds there) and GPU-resident data on both sides. Peak GPU memory is reported too.

With ``--peers`` the peers (``peers.py``) run in the same session, each right after aevision's run
of the same model, each at its own best setting: plain PyTorch as the peers wrote it in fp32 and
bf16 autocast, each also with fused Adam (this python), Keras as written, with XLA and autotune
off, and ``mixed_bfloat16`` with XLA (``peer_keras.py`` under ``--tf-python``, a TensorFlow
environment); and the fp32 and bf16 matmul ceilings at the start and the end (the median is used):
every comparison is a ratio of numbers measured on the same machine, minutes apart. ``--quality``
adds, per model, the validation loss of a fixed-seed bf16 run over an fp32 one (generated shapes,
both evaluated in fp32), and the MNIST preset's first model's linear-probe accuracy in bf16 minus
fp32, in points (``--part probe``; MNIST from ``--data-root``).

    python bench/throughput.py --peers --tf-python tfvenv/bin/python --quality   # the issue's run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

THREADS = 2
for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(var, str(THREADS))

import torch  # noqa: E402
from torch import nn  # noqa: E402

import common  # noqa: E402
import peers  # noqa: E402
from aevision.config import TrainConfig  # noqa: E402
from aevision.data.batches import TensorBatches  # noqa: E402
from aevision.engine import Trainer, seed_everything  # noqa: E402
from aevision.engine.allocator import tune_malloc  # noqa: E402
from aevision.engine.resources import peak_rss_mib  # noqa: E402
from aevision.errors import AevisionError  # noqa: E402
from aevision.models import Autoencoder, Parts, build_model  # noqa: E402
from peers import json_child, synchronize  # noqa: E402

# peers' sizes: (n, batch, epochs); epoch 1 is warm-up
CONFIG = {
    "M1": (20480, 256, 8), "M2": (20480, 256, 8), "M3": (2560, 128, 5),
    "conv": (20480, 256, 6), "conv+contractive": (10240, 256, 6),
}
PEERS = ("M1", "M2", "M3", "conv")  # the models the peers run too
KERAS = {"M1": 30.5e3, "M2": 19.3e3, "M3": 223.0}  # best Keras figures from the performance issue
# on a GPU: same batches, more images per epoch (an epoch must last well past timer noise)
GPU_CONFIG = {
    "M1": (262144, 256, 4), "M2": (262144, 256, 4), "M3": (32768, 128, 4),
    "conv": (131072, 256, 4), "conv+contractive": (65536, 256, 4),
}


def quick() -> bool:
    """``--quick``: a proof run (every part at a tiny size; numbers mean nothing). An environment
    variable, so that the child processes see it too."""
    return os.environ.get("AEVISION_BENCH_QUICK") == "1"


def sizes(name: str, gpu: bool = False) -> tuple[int, int, int]:
    """(images per epoch, batch, epochs) of ``name``: the peers' sizes, or a proof run's."""
    n, batch, epochs = (GPU_CONFIG if gpu else CONFIG)[name]
    return (2 * batch, batch, 2) if quick() else (n, batch, epochs)


@dataclass(frozen=True)
class Variant:
    """How both loops run a model: precision, memory layout, compilation."""

    precision: str = "32-true"
    channels_last: bool = False
    compile: bool = False


CPU_VARIANTS = {"fp32": Variant(), "bf16": Variant("bf16-mixed"),
                "bf16+channels_last": Variant("bf16-mixed", True),
                "bf16+compile": Variant("bf16-mixed", False, True),
                "bf16+channels_last+compile": Variant("bf16-mixed", True, True)}
# what a CPU run tries per model (bf16 + channels_last, one short measurement on a busy 2-core
# machine, 1 thread: M3 1.26x plain bf16, conv 0.95x; torch.compile: conv 0.87x, 200 s to compile;
# 2026-12-05, quiet, 2 threads: compile M1 bf16 1.04x of eager bf16, M3 bf16+channels_last 0.77x)
CPU_DEFAULT = {name: ["fp32", "bf16"] for name in CONFIG} | {"M3": ["fp32", "bf16", "bf16+channels_last"]}
GPU_VARIANTS = {"fp32": Variant(), "bf16": Variant("bf16-mixed", True),
                "bf16+compile": Variant("bf16-mixed", True, True)}


def m3_parts() -> Parts:
    """The documents' CIFAR conv autoencoder, decoder fixed to output 32x32 (as the peers run it)."""
    encoder = nn.Sequential(
        nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.Flatten(),
        nn.Linear(16 * 16 * 64, 8 * 8 * 64), nn.ReLU())
    decoder = nn.Sequential(
        nn.Unflatten(1, (64, 8, 8)),
        nn.ConvTranspose2d(64, 64, 3, padding=1), nn.ReLU(), nn.Upsample(scale_factor=2),
        nn.ConvTranspose2d(64, 64, 3, padding=1), nn.ReLU(), nn.Upsample(scale_factor=2),
        nn.ConvTranspose2d(64, 3, 3, padding=1))
    return Parts(encoder, decoder, 8 * 8 * 64)


def build(name: str) -> Autoencoder:
    if name == "M1":
        return build_model("dense", (1, 28, 28))
    if name == "M2":  # 784-784-128 / 128-128-784, L1 0.01 * mean|z| (= 0.01/128 * mean ||z||_1)
        return build_model("dense", (1, 28, 28), {"hidden": [784], "code_dim": 128,
                                                  "decoder_hidden": [128]},
                           [{"name": "l1", "weight": 0.01 / 128}])
    if name == "M3":
        return Autoencoder(m3_parts(), (3, 32, 32))
    if name == "conv":
        return build_model("conv", (3, 32, 32))
    if name == "conv+contractive":
        return build_model("conv", (3, 32, 32), {}, [{"name": "contractive", "method": "jvp"}])
    raise ValueError(name)


def shape_of(name: str) -> tuple[int, int, int]:
    return (1, 28, 28) if name in ("M1", "M2") else (3, 32, 32)


def plain_loop(model: nn.Module, x: torch.Tensor, batch: int, epochs: int,
               variant: Variant = Variant()) -> list[float]:
    """The peers' loop: float data in memory (on the model's device), randperm gather, Adam, loss,
    backward, step; with the variant's autocast, layout and compilation, and the engine's fused
    Adam (until 2026-12-05 the unfused one: the engine's 1.10-1.65x "lead" was that kernel)."""
    device = x.device
    model = model.to(device)
    if variant.channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)  # the engine's kernel: a ratio of loops
    step_model = torch.compile(model) if variant.compile else model
    bf16 = variant.precision.startswith("bf16")
    times = []
    n = len(x)
    for _ in range(epochs):
        t = time.perf_counter()
        perm = torch.randperm(n, device=device)
        for i in range(0, n, batch):
            xb = x[perm[i:i + batch]]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = step_model(xb)["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        loss.item()
        times.append(time.perf_counter() - t)
    return times


def aevision_loop(model: nn.Module, x_u8: torch.Tensor, batch: int, epochs: int,
                  out: Path, device: str = "cpu",
                  variant: Variant = Variant()) -> tuple[list[float], list[float]]:
    cfg = TrainConfig(epochs=epochs, batch_size=batch, accelerator=device, progress=False,
                      precision=variant.precision, channels_last=variant.channels_last,
                      compile=variant.compile)
    trainer = Trainer(cfg, out)
    result = trainer.fit(model, TensorBatches(x_u8, batch, seed=0), None)
    return ([h["train_seconds"] for h in result.history],
            [h["data_wait_fraction"] for h in result.history])


def round_count(name: str, variant: Variant, gpu: bool) -> int:
    """Rounds of each loop (see :func:`run_model`)."""
    if variant.compile or quick():
        return 1
    return 2 if name == "M3" or gpu else 5 if name in ("M1", "M2") else 3


def paired_ratio(rounds: dict[str, list[float]]) -> float | None:
    """The engine's speed over the plain loop's, as the median over rounds of each round's ratio
    (the two loops of a round run back to back, so drift in the machine's load hits both alike).
    ``ratio_vs_plain_torch`` divides the best rounds instead, and one unusually fast (or slow)
    round of either loop moves it: on 2026-12-05, M2 bf16's plain loop ran 38-40k images/s in
    four rounds and 52k in one, which made that ratio 0.82 while the paired median was 0.98.
    With M3's two rounds the median is the mean of both. (Until 2026-12-07 the first plain loop of
    a process ran slow, 155 vs 228 images/s in fp32: glibc mapped its buffers anew every step
    until the engine's first run tuned the allocator for the whole process; now :func:`run_model`
    tunes it for both loops from the start, as the engine does for its own runs only.)"""
    pairs = [a / p for a, p in zip(rounds["aevision"], rounds["plain"], strict=False) if p > 0]
    return round(statistics.median(pairs), 3) if pairs else None


def run_model(name: str, device: str = "cpu", variant_name: str = "fp32") -> dict:
    torch.set_num_threads(THREADS)
    tune_malloc()  # the plain loop under the allocator the engine trains with (engine/allocator.py)
    gpu = device != "cpu"
    variant = (GPU_VARIANTS if gpu else CPU_VARIANTS)[variant_name]
    n, batch, epochs = sizes(name, gpu)
    torch.manual_seed(0)
    x_u8 = torch.randint(0, 256, (n, *shape_of(name)), dtype=torch.uint8)
    x = (x_u8.float() / 255).to(device)
    rounds: dict[str, list[float]] = {"plain": [], "aevision": [], "wait": []}
    peak_gpu = {"plain": 0.0, "aevision": 0.0}
    with tempfile.TemporaryDirectory() as tmp:
        # alternate: drift in machine load hits both alike. Compiled variants: one round (the
        # compilation is warm-up, excluded like every first epoch, but costs a minute a loop).
        # M1 and M2 loops take seconds, and one noisy round swings their ratio by 10-25% (M1 bf16 on
        # 2026-12-05: plain 87k, 68k, 59k images/s in three rounds): five rounds, the best counts
        for r in range(round_count(name, variant, gpu)):
            for which in ("plain", "aevision"):
                if gpu:
                    torch.cuda.reset_peak_memory_stats()
                torch.manual_seed(0)
                if which == "plain":
                    times = plain_loop(build(name), x, batch, epochs, variant)
                else:
                    times, wait = aevision_loop(build(name), x_u8, batch, epochs, Path(tmp) / f"r{r}",
                                                device, variant)
                    rounds["wait"].append(statistics.median(wait[1:]))
                rounds[which].append(n / statistics.median(times[1:]))
                if gpu:
                    peak_gpu[which] = max(peak_gpu[which], torch.cuda.max_memory_allocated() / 2**20)
    plain, ours = max(rounds["plain"]), max(rounds["aevision"])
    res = {
        "model": name, "variant": variant_name, "precision": variant.precision, "n": n,
        "batch": batch, "epochs": epochs,
        "images_per_s": round(ours, 1), "plain_torch_images_per_s": round(plain, 1),
        "ratio_vs_plain_torch": round(ours / plain, 3),
        "ratio_vs_plain_torch_paired": paired_ratio(rounds),
        "peak_rss_mib": peak_rss_mib(),
        "data_wait_fraction": round(statistics.median(rounds["wait"]), 4),
        "rounds": {k: [round(v, 4) for v in vs] for k, vs in rounds.items()},
    }
    if gpu:
        res["peak_gpu_mib"] = {k: round(v, 1) for k, v in peak_gpu.items()}
    # the architecture's arithmetic (conv+contractive: conv's; the penalty's passes not counted)
    res["train_mflop_per_image"] = mflop = peers.train_mflop(build(name.split("+")[0]), shape_of(name))
    res["achieved_gflops"] = round(ours * mflop / 1e3, 1)
    if name in KERAS and not gpu:
        res["ratio_vs_keras_best"] = round(ours / KERAS[name], 2)  # the figure, not this run's
    return res


def contractive_costs(device: str = "cpu", bf16: bool = False) -> dict:
    """Step time of conv with the contractive penalty relative to plain conv: the default estimate
    (JVP on a quarter of each batch), the JVP on the whole batch, and the exact Jacobian (one step:
    a backward per code unit); with ``bf16`` every step under bf16 autocast (the engine's
    bf16-mixed). Alternated over three rounds; the fastest round of each counts. (With two rounds
    of 15 steps the JVP ratio ranged 1.24-1.65 over five runs of one CPU session.)"""
    torch.set_num_threads(THREADS)
    x = torch.rand(32 if quick() else 256, 3, 32, 32, device=device)
    variants = (("none", []), ("jvp", [{"name": "contractive", "method": "jvp"}]),
                ("jvp_full_batch", [{"name": "contractive", "method": "jvp", "samples": 1.0}]),
                ("exact", [{"name": "contractive", "method": "exact"}]))
    rounds: dict[str, list[float]] = {}
    for r in range(3):
        for label, regs in variants:
            if label == "exact" and r:
                continue
            torch.manual_seed(0)
            model = build_model("conv", (3, 32, 32), {}, regs).to(device)
            opt = torch.optim.Adam(model.parameters(), fused=True)
            steps = 1 if label == "exact" else 2 if quick() else 40 if device == "cpu" else 100
            for i in range(steps + 2):
                if i == 2:
                    synchronize(device)
                    t = time.perf_counter()
                with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
                    loss = model(x)["loss"]
                opt.zero_grad()
                loss.backward()
                opt.step()
            synchronize(device)
            rounds.setdefault(label, []).append(round((time.perf_counter() - t) / steps, 5))
    out = {label: min(seconds) for label, seconds in rounds.items()}
    return {"step_s": out, "step_s_rounds": rounds,
            "jvp_cost_ratio": round(out["jvp"] / out["none"], 3),
            "jvp_full_batch_cost_ratio": round(out["jvp_full_batch"] / out["none"], 3),
            "exact_cost_ratio": round(out["exact"] / out["none"], 2),
            "precision": "bf16-mixed" if bf16 else "32-true",
            "note": "default estimate: samples=0.25 of each batch (unbiased), 1 projection"}


def matmul_part(device: str) -> dict:
    """The matmul ceilings on ``device`` (a GPU: larger matrices, where it reaches its peak)."""
    torch.set_num_threads(THREADS)
    if quick():
        return peers.matmul_ceiling((256 if device == "cpu" else 1024,), 0.2, device)
    return peers.matmul_ceiling((1024, 2048, 4096) if device == "cpu" else (8192,), device=device)


def encode_60k(device: str = "cpu") -> float:
    """Seconds to encode 60k 28x28 images with the default conv encoder (batches of 1024), from
    uint8 images in host memory to float features in host memory."""
    from aevision.api import encode

    torch.set_num_threads(THREADS)
    model = build_model("conv", (1, 28, 28)).eval().to(device)
    x = torch.randint(0, 256, (60000, 1, 28, 28), dtype=torch.uint8)
    encode(model, x[:2048])  # warm-up
    t = time.perf_counter()
    encode(model, x, batch_size=1024)
    return round(time.perf_counter() - t, 3)


def pretrain_mnist(root: str | None) -> dict:
    """Peak RSS of ``aevision pretrain`` on MNIST (the default conv model, its default batch and
    validation split, three epochs): the issue's memory bar is 1.5 GB for the whole process."""
    from aevision.api import as_config, pretrain
    from aevision.data import load_dataset

    torch.set_num_threads(THREADS)
    with tempfile.TemporaryDirectory() as out:
        small = {"limit": 2000} if quick() else {}
        cfg = as_config({"data": {"name": "mnist", "root": root, **small},
                         "train": {"epochs": 1 if quick() else 3}, "output_dir": out})
        try:  # loaded here, as pretrain would, only to tell a missing MNIST from a failed run
            splits = load_dataset(cfg.data, cfg.seed)
        except AevisionError as e:  # no MNIST here (and offline): say so in the results
            return {"skipped": str(e)}
        pretrain(cfg, data=splits)
        summary = json.loads((Path(out) / "summary.json").read_text())
    return {"peak_rss_mib": summary["peak_rss_mib"], "train_images": len(splits.train),
            "epochs": cfg.train.epochs, "wall_seconds": summary["wall_seconds"],
            "under_1.5_GB": summary["peak_rss_mib"] * 2**20 < 1.5e9}


def quality(name: str, n: int = 4096, epochs: int = 3, seed: int = 0) -> dict:
    """Validation loss after a fixed-seed fp32 run and a bf16-mixed one of ``name`` (same seed,
    data and batches), both evaluated in fp32 (what the weights are worth, not how the last
    epoch was computed). Data: generated shapes (32x32 RGB; grey 28x28 for the dense M1, M2)."""
    torch.set_num_threads(THREADS)
    _, batch, _ = sizes(name)
    n, epochs = (2 * batch, 1) if quick() else (n, epochs)
    train, val = shapes_data(shape_of(name), n, max(256, n // 8))
    losses = {}
    with tempfile.TemporaryDirectory() as tmp:
        for precision in ("32-true", "bf16-mixed"):
            seed_everything(seed)
            model = build(name)
            cfg = TrainConfig(epochs=epochs, batch_size=batch, accelerator="cpu", progress=False,
                              precision=precision)
            Trainer(cfg, Path(tmp) / precision, seed=seed).fit(
                model, TensorBatches(train, batch, seed=seed), None)
            losses[precision] = fp32_loss(model, val)
    return {"n": n, "epochs": epochs, "batch": batch, "seed": seed,
            "val_loss_fp32": round(losses["32-true"], 6), "val_loss_bf16": round(losses["bf16-mixed"], 6),
            "loss_ratio_bf16_vs_fp32": round(losses["bf16-mixed"] / losses["32-true"], 4)}


def quality_over_seeds(name: str, n: int, epochs: int, seeds: list[int]) -> dict:
    """:func:`quality` for each seed; ``loss_ratio_bf16_vs_fp32`` is their mean (one short run's
    ratio is noise: at 96 steps fp32's own loss varies 1.8x between seeds)."""
    runs = [quality(name, n, epochs, seed) for seed in seeds]
    ratios = [r["loss_ratio_bf16_vs_fp32"] for r in runs]
    return {"seeds": seeds, "runs": runs, "loss_ratio_bf16_vs_fp32": round(statistics.mean(ratios), 4),
            "loss_ratio_std": round(statistics.stdev(ratios), 4) if len(ratios) > 1 else 0.0,
            "steps_per_run": runs[0]["epochs"] * -(-runs[0]["n"] // runs[0]["batch"])}


def shapes_data(shape: tuple[int, int, int], n: int, n_val: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (N, C, H, W) training and validation images of generated shapes, at ``shape``."""
    from aevision.data.shapes import shapes_classification

    images, _ = shapes_classification(n + n_val, shape[1], seed=1234)
    if shape[0] == 1:
        images = images.float().mean(dim=1, keepdim=True).round().to(torch.uint8)
    return images[:n], images[n:]


@torch.no_grad()
def fp32_loss(model: Autoencoder, images: torch.Tensor) -> float:
    """The mean training objective over ``images`` (uint8), eval mode, float32."""
    model.eval()
    total = 0.0
    for i in range(0, len(images), 256):
        xb = images[i:i + 256].float() / 255
        total += float(model(xb)["loss"]) * len(xb)
    return total / len(images)


def probe_quality(root: str | None, limit: int | None, epochs: int | None, seed: int = 0) -> dict:
    """The MNIST preset's first model pretrained in fp32 and in bf16-mixed (same seed), each
    probed by the preset's linear protocol on all labels (C chosen on the validation split): the
    test accuracy difference, in points."""
    from aevision.api import pretrain
    from aevision.benchmark.config import load_benchmark
    from aevision.benchmark.protocols import linear
    from aevision.data import load_dataset
    from aevision.tasks.features import FeatureEncoder, extract

    torch.set_num_threads(THREADS)
    bench = load_benchmark("mnist")
    name = next(iter(bench.models))
    out: dict = {"model": name, "limit": limit, "seed": seed}
    with tempfile.TemporaryDirectory() as tmp:
        for precision in ("32-true", "bf16-mixed"):
            cfg = bench.pretrain_config(name, replace(bench.datasets[0], root=root, limit=limit))
            cfg = replace(cfg, seed=seed, output_dir=str(Path(tmp) / precision),
                          train=replace(cfg.train, precision=precision, progress=False,
                                        epochs=epochs or cfg.train.epochs))
            try:
                splits = load_dataset(cfg.data, cfg.seed)
            except AevisionError as e:  # no MNIST here (and offline): say so in the results
                return {"skipped": str(e)}
            model = pretrain(cfg, data=splits).model
            fe = FeatureEncoder(model, bench.model_features(name))
            feats = {k: extract(fe, getattr(splits, k)) for k in ("train", "val", "test")}
            done = linear((feats["train"], splits.train.labels), (feats["val"], splits.val.labels),
                          feats["test"], bench.protocols.linear, n_classes=10, seed=seed)
            accuracy = (done.pred == splits.test.labels).float().mean()
            out[precision] = round(100 * float(accuracy), 2)
            out["epochs"] = cfg.train.epochs
    out["probe_points_bf16_vs_fp32"] = round(out["bf16-mixed"] - out["32-true"], 2)
    return out


def child(args: list[str], env: dict[str, str] | None = None) -> dict:
    """This script in a fresh process (peak RSS per model)."""
    return json_child(sys.executable, Path(__file__), args, env)


def peer_results(name: str, tf_python: str | None) -> dict:
    """Every peer of ``name`` at this model's sizes, right after aevision's runs of it: plain
    PyTorch fp32 and bf16 (each in its own process), Keras' three settings, and the best of each
    again with glibc keeping freed memory (``peers.MALLOC_PEERS``)."""
    n, batch, epochs = sizes(name)
    runs: dict[str, Callable[[], dict]] = {
        label: partial(child, ["--peer", label, "--model", name]) for label in peers.TORCH_PEERS}
    for label, args in peers.KERAS_RUNS.items() if tf_python else ():
        runs[label] = partial(peers.keras_peer, tf_python, name, args, n, batch, epochs, THREADS)
    for label, base in peers.MALLOC_PEERS.items():
        if base in peers.TORCH_PEERS:
            runs[label] = partial(child, ["--peer", base, "--model", name], env=peers.MALLOC_ENV)
        elif tf_python:
            runs[label] = partial(peers.keras_peer, tf_python, name, peers.KERAS_RUNS[base], n, batch,
                                  epochs, THREADS, env=peers.MALLOC_ENV)
    return {label: best_of(run, round_count(name, Variant(), False)) for label, run in runs.items()}


def best_of(run: Callable[[], dict], times: int) -> dict:
    """The fastest of ``times`` runs of a peer, each in a fresh process, with every run's images/s:
    the peers get as many tries as aevision's loops (until 2026-12-05 one run against the best of
    three, which on this noisy machine gave conv a 1.37x "lead" that the same loop run in
    aevision's process did not show)."""
    results = [run() for _ in range(times)]
    ok = [r for r in results if r.get("images_per_s")]
    if not ok:
        return results[0]
    best = max(ok, key=lambda r: r["images_per_s"])
    return {**best, "rounds_images_per_s": [r.get("images_per_s") for r in results]}


def best_variant(runs: dict[str, dict]) -> dict:
    """The fastest variant's run of a model, with every variant's images/s beside it."""
    ok = {v: r for v, r in runs.items() if r.get("images_per_s")}
    if not ok:
        return {"error": "no variant ran", "variants": runs}
    best = max(ok, key=lambda v: ok[v]["images_per_s"])
    return {**ok[best], "fp32_images_per_s": ok.get("fp32", {}).get("images_per_s"),
            "variants": runs}


def compare(result: dict, peer_runs: dict) -> None:
    """Per model: the best peer, the ratios, the share of the bf16 matmul ceiling; the quality."""
    ceilings = {k: statistics.median(c[k]["peak"] for c in peer_runs["matmul_ceiling"])
                for k in ("fp32", "bf16")}
    result["matmul_ceiling_gflops"] = ceilings
    for m in PEERS:
        ours, got = result.get(m, {}), peer_runs.get(m, {})
        if ours.get("images_per_s"):
            against_peers(ours, {label: r["images_per_s"] for label, r in got.items()
                                 if r.get("images_per_s")}, ceilings)


def against_peers(ours: dict, ips: dict[str, float], ceilings: dict[str, float]) -> None:
    """Add to a model's best run: its best peer of ``ips`` (label -> images/s) and the ratios, the
    best fp32 Keras figure, and its shares of the matmul ceilings (GFLOP/s by dtype)."""
    if ips:
        best = max(ips, key=lambda k: ips[k])
        ours.update(best_peer=best, best_peer_images_per_s=ips[best],
                    ratio_vs_best_peer=round(ours["images_per_s"] / ips[best], 3))
        ours["same_run_peers"] = {k: {"images_per_s": v, "ratio": round(ours["images_per_s"] / v, 3)}
                                  for k, v in ips.items()}
    fp32_keras = [ips[k] for k in ("keras", "keras_best", "keras_best_malloc") if k in ips]
    if fp32_keras:
        ours["keras_best_fp32_images_per_s"] = max(fp32_keras)
    gflops = ours["images_per_s"] * ours["train_mflop_per_image"] / 1e3
    ours["bf16_ceiling_fraction"] = round(gflops / ceilings["bf16"], 3)
    ours["fraction_of_matmul_ceiling"] = round(gflops / ceilings["fp32"], 3)


def gpu_summary(runs: dict[str, dict], ceilings: dict[str, float]) -> dict:
    """A model's GPU variants as the CPU table has them: the best variant's run, and as peers the
    plain PyTorch loop of each variant (fp32, bf16 autocast, bf16 + compile; no Keras there)."""
    best = best_variant(runs)
    if best.get("images_per_s"):
        against_peers(best, {f"torch_{v}": r["plain_torch_images_per_s"] for v, r in runs.items()
                             if r.get("plain_torch_images_per_s")}, ceilings)
    return best


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--peers", action="store_true", help="run the peers (peers.py) in this session")
    ap.add_argument("--tf-python", help="python of an environment with tensorflow (Keras peer)")
    ap.add_argument("--quality", action="store_true",
                    help="also: bf16 vs fp32 validation loss per model and MNIST probe accuracy")
    ap.add_argument("--model", choices=list(CONFIG))
    ap.add_argument("--models", default=",".join(CONFIG),
                    help="comma-separated models of a whole run (default: all)")
    ap.add_argument("--peer", choices=list(peers.TORCH_PEERS), help="a child: one torch peer run")
    ap.add_argument("--variant", default="fp32", choices=sorted({*GPU_VARIANTS, *CPU_VARIANTS}))
    ap.add_argument("--variants", help="comma-separated variants to run (default: on the CPU "
                    f"{CPU_DEFAULT['M3']} for M3, fp32,bf16 otherwise; on a GPU all)")
    ap.add_argument("--quick", action="store_true",
                    help="prove the script: every part at a tiny size (the numbers mean nothing)")
    ap.add_argument("--models-only", action="store_true",
                    help="skip the contractive-cost, encode and MNIST-pretraining parts")
    ap.add_argument("--part", choices=["contractive", "contractive-bf16", "encode", "pretrain-mnist",
                                       "matmul", "quality", "probe"])
    ap.add_argument("--probe-limit", type=int, help="MNIST training images for --part probe")
    ap.add_argument("--probe-epochs", type=int, help="epochs for --part probe (default: the preset's)")
    ap.add_argument("--quality-n", type=int, default=4096, help="training images of --part quality")
    ap.add_argument("--quality-epochs", type=int, default=3)
    ap.add_argument("--quality-seeds", type=lambda v: [int(x) for x in v.split(",")], default=[0],
                    help="comma-separated seeds of --part quality (the ratio is their mean)")
    ap.add_argument("--data-root", default=os.environ.get("AEVISION_DATA"),
                    help="where MNIST is, for the pretraining memory part (default $AEVISION_DATA)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--budget-s", type=float,
                    help="with --device cuda: start no model run after this many seconds (the "
                         "file is rewritten after every run, marked complete: false until the end)")
    ap.add_argument("--out", help="results file (default bench/results/throughput.json; with "
                                  "--device cuda, bench/results/throughput_gpu/throughput_gpu.json)")
    a = ap.parse_args(argv)
    check_args(a)
    if a.quick:
        os.environ["AEVISION_BENCH_QUICK"] = "1"
    return a


def check_args(a: argparse.Namespace) -> None:
    gpu = a.device == "cuda"
    if gpu and not torch.cuda.is_available():
        sys.exit("throughput: --device cuda, but torch sees no CUDA device")
    if gpu and (a.peers or a.quality):
        sys.exit("throughput: --peers and --quality are CPU measurements; not with --device cuda")
    for m in a.models.split(","):
        if m not in CONFIG:
            sys.exit(f"throughput: unknown model {m!r} in --models; expected some of {', '.join(CONFIG)}")
    known = GPU_VARIANTS if gpu else CPU_VARIANTS
    for v in [a.variant, *(a.variants.split(",") if a.variants else [])]:
        if v not in known:
            sys.exit(f"throughput: unknown variant {v!r} for --device {a.device}; expected one of "
                     f"{', '.join(known)}")


def one_part(a: argparse.Namespace) -> dict | None:
    """What a child process measures (``--model``, ``--peer`` or ``--part``), or None for the
    whole run."""
    if a.peer:
        n, batch, epochs = sizes(a.model)
        torch.set_num_threads(THREADS)
        bf16, fused = peers.TORCH_PEERS[a.peer]
        return peers.torch_peer(a.model, n, batch, epochs, bf16=bf16, fused=fused)
    parts = {
        "contractive": lambda: contractive_costs(a.device),
        "contractive-bf16": lambda: contractive_costs(a.device, bf16=True),
        "encode": lambda: {"encode_mnist_60k_s": encode_60k(a.device)},
        "pretrain-mnist": lambda: {"pretrain_mnist": pretrain_mnist(a.data_root)},
        "matmul": lambda: matmul_part(a.device),
        "quality": lambda: quality_over_seeds(a.model, a.quality_n, a.quality_epochs, a.quality_seeds),
        "probe": lambda: probe_quality(a.data_root, a.probe_limit or (2000 if quick() else None),
                                       a.probe_epochs or (1 if quick() else None)),
    }
    if a.part:
        return parts[a.part]()
    if a.model:
        return run_model(a.model, a.device, a.variant)
    return None


def variants_of(name: str, a: argparse.Namespace) -> list[str]:
    if a.variants:
        return a.variants.split(",")
    return list(GPU_VARIANTS) if a.device == "cuda" else CPU_DEFAULT[name]


def run_models(a: argparse.Namespace, result: dict, peer_runs: dict) -> None:
    """Each model at each variant in its own child process, its peers right after it."""
    for name in a.models.split(","):
        runs = {v: child(["--model", name, "--variant", v, "--device", a.device])
                for v in variants_of(name, a)}
        result[name] = best_variant(runs)
        if a.quality:
            result[name]["quality"] = child(["--part", "quality", "--model", name, "--quality-n",
                                             str(a.quality_n), "--quality-epochs", str(a.quality_epochs),
                                             "--quality-seeds", ",".join(map(str, a.quality_seeds))])
            result[name]["loss_ratio_bf16_vs_fp32"] = result[name]["quality"].get("loss_ratio_bf16_vs_fp32")
        print(json.dumps({name: result[name]}), file=sys.stderr)
        if a.peers and name in PEERS:  # right after ours: the machine's speed drifts
            peer_runs[name] = peer_results(name, a.tf_python)


def gpu_models(a: argparse.Namespace, result: dict, save: Callable[[], None]) -> None:
    """On a GPU: the matmul ceilings, then every model at one variant before the next variant
    (fp32, bf16, bf16 + compile: with ``--budget-s`` the slow compiled runs are the ones left out),
    each model's summary (:func:`gpu_summary`) and ``save`` after every child."""
    t0 = time.monotonic()
    result["matmul_ceiling"] = ceiling = child(["--part", "matmul", "--device", a.device])
    ceilings = {k: ceiling[k]["peak"] for k in ("fp32", "bf16")}
    result["matmul_ceiling_gflops"] = ceilings
    models = a.models.split(",")
    runs: dict[str, dict] = {m: {} for m in models}
    for v in dict.fromkeys(v for m in models for v in variants_of(m, a)):
        for m in (m for m in models if v in variants_of(m, a)):
            if a.budget_s and time.monotonic() - t0 > a.budget_s:
                runs[m][v] = {"skipped": f"past --budget-s {a.budget_s:g}"}
            else:
                runs[m][v] = child(["--model", m, "--variant", v, "--device", a.device])
            result[m] = gpu_summary(runs[m], ceilings)
            save()


def whole_run(a: argparse.Namespace, save: Callable[[dict], None] = lambda result: None) -> dict:
    """The matmul ceilings, each model (and variant) in its own child process with its peers right
    after it, the ceilings again, then the contractive cost (fp32 and bf16), ``encode``, the MNIST
    pretraining part and (``--quality``) the MNIST probe in bf16 vs fp32. On a GPU the short parts
    come first and the models last (:func:`gpu_models`), the file saved after every run."""
    gpu = a.device == "cuda"
    result = {"command": "python bench/throughput.py", "threads": THREADS,
              "machine": common.machine(load_average=True)}
    if quick():
        result["quick"] = "a proof run at tiny sizes: the numbers mean nothing"
    if gpu:
        result["machine"]["cuda_matmul_tf32"] = torch.backends.cuda.matmul.allow_tf32
        result["machine"]["cudnn_tf32"] = torch.backends.cudnn.allow_tf32
        if not a.models_only:
            other_parts(a, result)
        gpu_models(a, result, lambda: save({**result, "complete": False}))
    else:
        peer_runs: dict = {"matmul_ceiling": [child(["--part", "matmul"])] if a.peers else []}
        run_models(a, result, peer_runs)
        if a.peers:
            peer_runs["matmul_ceiling"].append(child(["--part", "matmul"]))
        if not a.models_only:
            other_parts(a, result)
        if a.peers:
            result["peers"] = peer_runs
            compare(result, peer_runs)
    result["command"] = common.command("throughput.py")
    result["complete"] = True
    return result


def other_parts(a: argparse.Namespace, result: dict) -> None:
    """The contractive cost (fp32 and bf16), ``encode``; on the CPU the MNIST pretraining part and
    (``--quality``) the MNIST probe in bf16 vs fp32."""
    device_args = ["--device", a.device]
    result["contractive_cost"] = child(["--part", "contractive", *device_args])
    result["contractive_cost_bf16"] = child(["--part", "contractive-bf16", *device_args])
    result.update(child(["--part", "encode", *device_args]))
    if a.device != "cpu":
        return
    root = ["--data-root", a.data_root] if a.data_root else []
    result.update(child(["--part", "pretrain-mnist", *root]))
    if a.quality:
        probe_size = [*(["--probe-limit", str(a.probe_limit)] if a.probe_limit else []),
                      *(["--probe-epochs", str(a.probe_epochs)] if a.probe_epochs else [])]
        result["probe_quality"] = child(["--part", "probe", *root, *probe_size])
        result["probe_points_bf16_vs_fp32"] = result["probe_quality"].get("probe_points_bf16_vs_fp32")


def main() -> None:
    a = parse_args()
    part = one_part(a)
    if part is not None:  # a child: one JSON line on stdout, no file
        print(json.dumps(part))
        return
    default = "throughput_gpu/throughput_gpu.json" if a.device == "cuda" else "throughput.json"
    out = a.out or str(common.RESULTS / default)
    common.publish(out, whole_run(a, lambda partial: common.write_json(out, partial)))


if __name__ == "__main__":
    main()
