"""The peers of ``throughput.py``, each at its own best setting, and the machine's matmul ceilings.

Adapted from the peer scripts of the performance issue (``../shared/peers``: ``bench_torch.py``,
``bench_matmul_peak.py``; the Keras peer is ``peer_keras.py``, run with a TensorFlow environment's
python):

- plain PyTorch as the peers wrote it: their models (M1, M2, M3; for ``conv`` the same layers as
  aevision's default conv autoencoder in one ``nn.Sequential``), float data in memory, a randperm
  gather, ``Adam(lr=1e-3)``, ``F.mse_loss`` (+ M2's ``0.01 * mean|z|``), backward, step; in fp32
  and under ``torch.autocast("cpu", dtype=torch.bfloat16)`` (the peer's bf16), each with Adam as
  written and with ``fused=True`` (the engine's kernel, one argument away), in this process;
- Keras (``peer_keras.py``): ``fit`` as written (fp32), fp32 with XLA and tf.data autotune off (the
  best fp32 Keras of the issue), and ``mixed_bfloat16`` with XLA;
- the best PyTorch and fp32 Keras peers again with glibc told to keep freed memory
  (:data:`MALLOC_ENV`), as aevision's engine does for itself (``engine/allocator.py``): without it
  a fresh process maps and zeroes its large buffers anew every step (M3's plain loop: 155 images/s
  in a fresh process, 228 once the engine had tuned the allocator, 2026-12-05);
- the matmul ceiling: ``torch.mm`` of square fp32 and bf16 matrices, GFLOP/s (median of 7 reps of
  ~1 s), at the start and the end of a run.

Training FLOPs follow the peers' convention: 3 x 2 x the multiply-accumulates of the dense and conv
layers (:func:`train_mflop`).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from aevision.models import build_model

KERAS_SCRIPT = Path(__file__).resolve().parent / "peer_keras.py"
# label -> peer_keras.py arguments: as written, and each precision at its best setting
KERAS_RUNS = {
    "keras": [],
    "keras_best": ["--jit", "--no-autotune"],
    "keras_bf16": ["--jit", "--no-autotune", "--precision", "mixed_bfloat16"],
}


def peer_model(name: str) -> nn.Module:
    """The peers' plain model of ``name``: (N, ...) -> its reconstruction, or (M2) with its code."""
    if name == "M1":
        return nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 784), nn.Sigmoid())
    if name == "M2":
        return nn.ModuleDict({
            "enc": nn.Sequential(nn.Linear(784, 784), nn.ReLU(), nn.Linear(784, 128), nn.ReLU()),
            "dec": nn.Sequential(nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 784), nn.Sigmoid())})
    if name == "M3":
        return nn.Sequential(
            nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.Flatten(),
            nn.Linear(16 * 16 * 64, 8 * 8 * 64), nn.ReLU(), nn.Unflatten(1, (64, 8, 8)),
            nn.ConvTranspose2d(64, 64, 3, padding=1), nn.ReLU(), nn.Upsample(scale_factor=2),
            nn.ConvTranspose2d(64, 64, 3, padding=1), nn.ReLU(), nn.Upsample(scale_factor=2),
            nn.ConvTranspose2d(64, 3, 3, padding=1))
    if name == "conv":
        ae = build_model("conv", (3, 32, 32))
        return nn.Sequential(ae.encoder, ae.decoder)
    raise ValueError(name)


def peer_shape(name: str) -> tuple[int, ...]:
    return (784,) if name in ("M1", "M2") else (3, 32, 32)


def peer_loss(name: str, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if name == "M2":
        z = net["enc"](x)
        return F.mse_loss(net["dec"](z), x) + 0.01 * z.abs().mean()
    return F.mse_loss(net(x), x)


# glibc's own tunables for what the engine sets with mallopt when training starts (freed memory kept
# for reuse: no per-step mmap, munmap and page faults); for a plain loop, two environment variables
MALLOC_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**31 - 1)}
# label -> the peer it runs again with MALLOC_ENV in its process's environment
MALLOC_PEERS = {"torch_bf16_fused_malloc": "torch_bf16_fused", "keras_best_malloc": "keras_best"}


def malloc_tuned() -> bool:
    """This process runs with :data:`MALLOC_ENV` (glibc reads it when the process starts)."""
    return all(os.environ.get(k) == v for k, v in MALLOC_ENV.items())


# label -> (bf16 autocast, fused Adam): the peers as written, and with the one-argument optimizer
# kernel aevision's engine uses (1.15-1.67x on this CPU's plain loop for M1..M3, 2026-12-05)
TORCH_PEERS = {"torch": (False, False), "torch_bf16": (True, False),
               "torch_fused": (False, True), "torch_bf16_fused": (True, True)}


def torch_peer(name: str, n: int, batch: int, epochs: int, bf16: bool, fused: bool = False) -> dict:
    """The peers' plain PyTorch loop: images/s (median of the epochs after the first)."""
    torch.manual_seed(0)
    x = torch.rand(n, *peer_shape(name))
    net = peer_model(name)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, fused=fused)
    times = []
    for _ in range(epochs):
        t = time.perf_counter()
        perm = torch.randperm(n)
        for i in range(0, n, batch):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = peer_loss(name, net, x[perm[i:i + batch]])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        loss.item()
        times.append(time.perf_counter() - t)
    label = ("torch-bf16-autocast" if bf16 else "torch-fp32") + ("-fused-adam" if fused else "") + (
        "-glibc-keep-freed-memory" if malloc_tuned() else "")
    return {"peer": label, "model": name, "n": n,
            "batch": batch, "epochs": epochs, "epoch_times_s": [round(t, 4) for t in times],
            "images_per_s": round(n / statistics.median(times[1:]), 1)}


def keras_peer(tf_python: str, name: str, args: list[str], n: int, batch: int, epochs: int,
               threads: int, env: dict[str, str] | None = None) -> dict:
    """``peer_keras.py`` in the TensorFlow environment: its one JSON line, or the error."""
    sizes = ["--model", name, "--n", str(n), "--batch", str(batch), "--epochs", str(epochs),
             "--threads", str(threads)]
    result = json_child(tf_python, KERAS_SCRIPT, [*sizes, *args], env)
    return {**result, "env": env} if env and "error" not in result else result


def json_child(python: str, script: Path, args: list[str], env: dict[str, str] | None = None) -> dict:
    """The last JSON line a script prints (ours print one), or the error; ``env``: added to the
    child's environment."""
    p = subprocess.run([python, str(script), *args], capture_output=True, text=True,
                       env={**os.environ, **env} if env else None)
    lines = [ln for ln in p.stdout.splitlines() if ln.strip().startswith("{")]
    if p.returncode != 0 or not lines:
        return {"error": (p.stderr or p.stdout)[-2000:], "script": script.name, "args": args}
    return json.loads(lines[-1])


def matmul_gflops(dtype: torch.dtype, n: int, reps: int = 7, min_time: float = 1.0,
                  device: str = "cpu") -> float:
    """Median GFLOP/s of ``torch.mm`` on (n, n) matrices of ``dtype``, reps of ~``min_time`` s."""
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    c = torch.empty(n, n, dtype=dtype, device=device)

    def timed(inner: int) -> float:
        synchronize(device)
        t = time.perf_counter()
        for _ in range(inner):
            torch.mm(a, b, out=c)
        synchronize(device)
        return time.perf_counter() - t

    timed(3)  # warm-up: kernel selection, clocks
    inner = max(1, int(min_time / max(timed(1), 1e-6)))
    return round(statistics.median(2.0 * n ** 3 * inner / timed(inner) / 1e9 for _ in range(reps)), 1)


def synchronize(device: str) -> None:
    """Wait for the GPU's queued work (timings of asynchronous kernels); nothing on the CPU."""
    if device != "cpu":
        torch.cuda.synchronize()


def matmul_ceiling(sizes: tuple[int, ...] = (1024, 2048, 4096), min_time: float = 1.0,
                   device: str = "cpu") -> dict:
    """fp32 and bf16 matmul GFLOP/s at each size; ``peak`` the best size of each. On a GPU fp32
    runs as the benchmark's models do (TF32 where ``torch.backends.cuda.matmul.allow_tf32``)."""
    out: dict = {}
    for label, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        by_size = {str(n): matmul_gflops(dtype, n, min_time=min_time, device=device) for n in sizes}
        out[label] = {"gflops_by_size": by_size, "peak": max(by_size.values())}
    return out


def train_mflop(model: nn.Module, shape: tuple[int, ...]) -> float:
    """Training MFLOP per image, the peers' convention: 3 x 2 x the MACs of one image's forward
    through the Linear, Conv2d and ConvTranspose2d layers (activations, pooling, loss ignored)."""
    macs = [0]

    def count(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
        if isinstance(module, nn.Linear):
            macs[0] += module.in_features * module.out_features
        elif isinstance(module, nn.Conv2d):  # per output pixel: Cin/groups * k*k * Cout
            macs[0] += out[0].numel() * module.weight[0].numel()
        elif isinstance(module, nn.ConvTranspose2d):  # per input pixel: Cin * k*k * Cout/groups
            macs[0] += args[0][0].numel() // args[0].shape[1] * module.weight.numel()

    handles = [m.register_forward_hook(count) for m in model.modules()]
    try:
        with torch.no_grad():
            model.eval()(torch.rand(1, *shape))
    finally:
        for h in handles:
            h.remove()
    return round(6 * macs[0] / 1e6, 3)
