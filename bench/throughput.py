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

On a GPU each model runs in three variants, both loops alike: fp32, bf16 autocast + channels_last
(a no-op for the dense M1 and M2) and bf16 + ``torch.compile``; with larger datasets (an epoch of
the CPU sizes takes milliseconds there) and GPU-resident data on both sides. Peak GPU memory is
reported too.

With ``--peers`` the peers' own scripts run in the same session (plain PyTorch with this python,
Keras with ``--tf-python``, a separate environment), each right after aevision's run of the same
model, and the fp32 matmul ceiling at the start and the end (the median is used): every comparison
is a ratio of numbers measured on the same machine, minutes apart.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

THREADS = 2
for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(var, str(THREADS))

import torch  # noqa: E402
from torch import nn  # noqa: E402

import common  # noqa: E402
from aevision.config import TrainConfig  # noqa: E402
from aevision.data.batches import TensorBatches  # noqa: E402
from aevision.engine import Trainer  # noqa: E402
from aevision.engine.resources import peak_rss_mib  # noqa: E402
from aevision.errors import AevisionError  # noqa: E402
from aevision.models import Autoencoder, Parts, build_model  # noqa: E402

# peers' sizes: (n, batch, epochs); epoch 1 is warm-up
CONFIG = {
    "M1": (20480, 256, 8), "M2": (20480, 256, 8), "M3": (2560, 128, 5),
    "conv": (20480, 256, 6), "conv+contractive": (10240, 256, 6),
}
# training FLOPs per image of the peer models (peers' convention: 3 x 2 x MACs)
TRAIN_MFLOP = {"M1": 2.4, "M2": 5.0, "M3": 551.0}
KERAS = {"M1": 30.5e3, "M2": 19.3e3, "M3": 223.0}  # best Keras figures from the performance issue
# on a GPU: same batches, more images per epoch (an epoch must last well past timer noise)
GPU_CONFIG = {
    "M1": (262144, 256, 4), "M2": (262144, 256, 4), "M3": (32768, 128, 4),
    "conv": (131072, 256, 4), "conv+contractive": (65536, 256, 4),
}


@dataclass(frozen=True)
class Variant:
    """How both loops run a model: precision, memory layout, compilation."""

    precision: str = "32-true"
    channels_last: bool = False
    compile: bool = False


CPU_VARIANTS = {"fp32": Variant()}
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
    backward, step; on a GPU with the variant's autocast, layout and compilation."""
    device = x.device
    model = model.to(device)
    if variant.channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
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


def run_model(name: str, device: str = "cpu", variant_name: str = "fp32") -> dict:
    torch.set_num_threads(THREADS)
    gpu = device != "cpu"
    variant = (GPU_VARIANTS if gpu else CPU_VARIANTS)[variant_name]
    n, batch, epochs = (GPU_CONFIG if gpu else CONFIG)[name]
    torch.manual_seed(0)
    x_u8 = torch.randint(0, 256, (n, *shape_of(name)), dtype=torch.uint8)
    x = (x_u8.float() / 255).to(device)
    rounds: dict[str, list[float]] = {"plain": [], "aevision": [], "wait": []}
    peak_gpu = {"plain": 0.0, "aevision": 0.0}
    with tempfile.TemporaryDirectory() as tmp:
        # alternate: drift in machine load hits both alike. Compiled variants: one round (the
        # compilation is warm-up, excluded like every first epoch, but costs a minute a loop)
        for r in range(1 if variant.compile else 2 if name == "M3" or gpu else 3):
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
        "model": name, "variant": variant_name, "n": n, "batch": batch, "epochs": epochs,
        "images_per_s": round(ours, 1), "plain_torch_images_per_s": round(plain, 1),
        "ratio_vs_plain_torch": round(ours / plain, 3),
        "peak_rss_mib": peak_rss_mib(),
        "data_wait_fraction": round(statistics.median(rounds["wait"]), 4),
        "rounds": {k: [round(v, 4) for v in vs] for k, vs in rounds.items()},
    }
    if gpu:
        res["peak_gpu_mib"] = {k: round(v, 1) for k, v in peak_gpu.items()}
    if name in TRAIN_MFLOP:
        res["achieved_gflops"] = round(ours * TRAIN_MFLOP[name] / 1e3, 1)
        if not gpu:
            res["ratio_vs_keras_best"] = round(ours / KERAS[name], 2)
    return res


def contractive_costs(device: str = "cpu") -> dict:
    """Step time of conv with the contractive penalty relative to plain conv: the default estimate
    (JVP on a quarter of each batch), the JVP on the whole batch, and the exact Jacobian (one step:
    a backward per code unit). Alternated over three rounds; the fastest round of each counts. (With
    two rounds of 15 steps the JVP ratio ranged 1.24-1.65 over five runs of one CPU session.)"""
    torch.set_num_threads(THREADS)
    x = torch.rand(256, 3, 32, 32, device=device)
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
            steps = 1 if label == "exact" else 40 if device == "cpu" else 100
            for i in range(steps + 2):
                if i == 2:
                    synchronize(device)
                    t = time.perf_counter()
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
            "note": "default estimate: samples=0.25 of each batch (unbiased), 1 projection"}


def synchronize(device: str) -> None:
    if device != "cpu":
        torch.cuda.synchronize()


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
        cfg = as_config({"data": {"name": "mnist", "root": root}, "train": {"epochs": 3}, "output_dir": out})
        try:  # loaded here, as pretrain would, only to tell a missing MNIST from a failed run
            splits = load_dataset(cfg.data, cfg.seed)
        except AevisionError as e:  # no MNIST here (and offline): say so in the results
            return {"skipped": str(e)}
        pretrain(cfg, data=splits)
        summary = json.loads((Path(out) / "summary.json").read_text())
    return {"peak_rss_mib": summary["peak_rss_mib"], "train_images": len(splits.train),
            "epochs": cfg.train.epochs, "wall_seconds": summary["wall_seconds"],
            "under_1.5_GB": summary["peak_rss_mib"] * 2**20 < 1.5e9}


def json_child(python: str, script: Path, args: list[str]) -> dict:
    """The last JSON line a script prints (ours and the peers' print one), or the error."""
    p = subprocess.run([python, str(script), *args], capture_output=True, text=True)
    lines = [ln for ln in p.stdout.splitlines() if ln.strip().startswith("{")]
    if p.returncode != 0 or not lines:
        return {"error": (p.stderr or p.stdout)[-2000:], "script": script.name, "args": args}
    return json.loads(lines[-1])


def child(args: list[str]) -> dict:
    """This script in a fresh process (peak RSS per model)."""
    return json_child(sys.executable, Path(__file__), args)


def peer_runs(folder: Path, tf_python: str | None) -> list[tuple[str, str, Path, list[str]]]:
    """(label, python, script, extra args) of each peer."""
    runs = [("torch", sys.executable, folder / "bench_torch.py", [])]
    if tf_python:
        runs.append(("keras", tf_python, folder / "bench_tf.py", []))
        runs.append(("keras_best", tf_python, folder / "bench_tf.py", ["--jit", "--no-autotune"]))
    return runs


def compare(result: dict, peers: dict) -> None:
    """Ratios of aevision's images/s to each peer's, and the share of the matmul ceiling."""
    ceilings = [c.get("peak_gflops") for c in peers["matmul_ceiling"] if c.get("peak_gflops")]
    gflops = statistics.median(ceilings) if ceilings else None
    result["matmul_ceiling_gflops"] = gflops
    for m in ("M1", "M2", "M3"):
        ours = result[m].get("images_per_s")
        if not ours:
            continue
        vs = {}
        for label in ("torch", "keras", "keras_best"):
            ips = peers.get(label, {}).get(m, {}).get("images_per_s")
            if ips:
                vs[label] = {"images_per_s": ips, "ratio": round(ours / ips, 3)}
        result[m]["same_run_peers"] = vs
        if gflops:
            result[m]["fraction_of_matmul_ceiling"] = round(ours * TRAIN_MFLOP[m] / 1e3 / gflops, 3)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--peers", help="folder of the peers' benchmark scripts: run them in this session")
    ap.add_argument("--tf-python", help="python of an environment with tensorflow (Keras peer)")
    ap.add_argument("--model", choices=list(CONFIG))
    ap.add_argument("--variant", default="fp32", choices=list(GPU_VARIANTS))
    ap.add_argument("--variants", default=",".join(GPU_VARIANTS),
                    help="with --device cuda: the comma-separated variants to run (default: all)")
    ap.add_argument("--models-only", action="store_true",
                    help="skip the contractive-cost, encode and MNIST-pretraining parts")
    ap.add_argument("--part", choices=["contractive", "encode", "pretrain-mnist"])
    ap.add_argument("--data-root", default=os.environ.get("AEVISION_DATA"),
                    help="where MNIST is, for the pretraining memory part (default $AEVISION_DATA)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--out", help="results file (default bench/results/throughput.json; with "
                                  "--device cuda, bench/results/throughput_gpu/throughput_gpu.json)")
    a = ap.parse_args()
    gpu = a.device == "cuda"
    if gpu and not torch.cuda.is_available():
        sys.exit("throughput: --device cuda, but torch sees no CUDA device")
    if gpu and a.peers:
        sys.exit("throughput: --peers runs the peers' CPU scripts; it does not go with --device cuda")
    known = GPU_VARIANTS if gpu else CPU_VARIANTS
    for v in [a.variant, *(a.variants.split(",") if gpu else [])]:
        if v not in known:
            sys.exit(f"throughput: unknown variant {v!r} for --device {a.device}; expected one of "
                     f"{', '.join(known)}")
    return a


def one_part(a: argparse.Namespace) -> dict | None:
    """What a child process measures (``--model`` or ``--part``), or None for the whole run."""
    if a.model:
        return run_model(a.model, a.device, a.variant)
    if a.part == "contractive":
        return contractive_costs(a.device)
    if a.part == "encode":
        return {"encode_mnist_60k_s": encode_60k(a.device)}
    if a.part == "pretrain-mnist":
        return {"pretrain_mnist": pretrain_mnist(a.data_root)}
    return None


def whole_run(a: argparse.Namespace) -> dict:
    """Each model (and variant) in its own child process, the peers right after ours, then the
    contractive cost, ``encode`` and the MNIST pretraining part."""
    gpu = a.device == "cuda"
    result = {"command": "python bench/throughput.py", "threads": THREADS, "machine": common.machine()}
    if gpu:
        result["machine"]["cuda_matmul_tf32"] = torch.backends.cuda.matmul.allow_tf32
        result["machine"]["cudnn_tf32"] = torch.backends.cudnn.allow_tf32
    peers: dict = {"matmul_ceiling": []}
    runs = peer_runs(Path(a.peers), a.tf_python) if a.peers else []
    if a.peers:
        peers["matmul_ceiling"].append(json_child(sys.executable, Path(a.peers) / "bench_matmul_peak.py", []))
    device_args = ["--device", a.device]
    for name in CONFIG:
        if gpu:
            result[name] = {v: child(["--model", name, "--variant", v, *device_args])
                            for v in a.variants.split(",")}
        else:
            result[name] = child(["--model", name])
        print(json.dumps({name: result[name]}), file=sys.stderr)
        for label, python, script, extra in runs if name in TRAIN_MFLOP else []:
            # right after ours: the machine's speed drifts, so peers run at the same moment
            peers.setdefault(label, {})[name] = json_child(python, script, ["--model", name, *extra])
    if not a.models_only:
        result["contractive_cost"] = child(["--part", "contractive", *device_args])
        result.update(child(["--part", "encode", *device_args]))
        if not gpu:
            root = ["--data-root", a.data_root] if a.data_root else []
            result.update(child(["--part", "pretrain-mnist", *root]))
    if a.peers:
        peers["matmul_ceiling"].append(json_child(sys.executable, Path(a.peers) / "bench_matmul_peak.py", []))
        result["peers"] = peers
        compare(result, peers)
    result["command"] = common.command("throughput.py")
    return result


def main() -> None:
    a = parse_args()
    part = one_part(a)
    if part is not None:  # a child: one JSON line on stdout, no file
        print(json.dumps(part))
        return
    default = "throughput_gpu/throughput_gpu.json" if a.device == "cuda" else "throughput.json"
    common.publish(a.out or str(common.RESULTS / default), whole_run(a))


if __name__ == "__main__":
    main()
