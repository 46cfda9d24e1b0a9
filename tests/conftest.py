"""Shared fixtures: small generated data only; nothing here downloads or reads ../shared."""

from __future__ import annotations

import importlib
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

# OpenMP threads that spin while waiting burn the CPU other jobs need, and on a busy machine a
# parallel region then waits for a descheduled thread on every op (tiny models ran 28x slower
# with 2 threads than with 1). Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pytest
import torch

# Tests never read real datasets (CI exports AEVISION_DATA for benchmarks): point the default data
# root at a folder that does not exist, so a test that would need downloads fails loudly instead.
os.environ["AEVISION_DATA"] = os.path.join(os.path.dirname(__file__), "_no_data_here")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture()
def bench_script(monkeypatch):
    """``bench_script("compression")``: a script of bench/ imported as a module (and forgotten after
    the test, so that each test gets a fresh one)."""
    loaded: list[str] = []

    def load(name: str):
        monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent / "bench"))
        loaded.append(name)
        return importlib.import_module(name)

    yield load
    for name in loaded:
        sys.modules.pop(name, None)


@pytest.fixture()
def one_thread():
    """Torch on one thread for the test: small models and probes gain nothing from a second one but
    synchronisation (and waiting, on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
    np.random.seed(0)


def tiny_config(out_dir, **overrides):
    """A digits run small enough for a unit test (a few hundred images, a few epochs)."""
    cfg = {
        "seed": 0,
        "output_dir": str(out_dir),
        "data": {"name": "digits", "limit": 300},
        "model": {"name": "dense", "code_dim": 16},
        "train": {"epochs": 2, "batch_size": 32, "progress": False},
    }
    for key, value in overrides.items():
        section, _, field = key.partition("__")
        if field:
            cfg.setdefault(section, {})[field] = value
        else:
            cfg[section] = value
    return cfg


def fake_mnist(root: Path, folder: str = "MNIST", n_train: int = 20, n_test: int = 10) -> None:
    """MNIST's files in torchvision's layout (``root/MNIST/raw/*-ubyte``), random pixels."""
    raw = Path(root) / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", (np.arange(n) % 10).astype(np.uint8))


def _write_idx(path: Path, array: np.ndarray) -> None:
    magic = 0x0800 | array.ndim  # unsigned bytes, then the number of dimensions
    dims = b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(struct.pack(">I", magic) + dims + array.tobytes())


def assert_kill_and_resume_is_exact(argv: list[str], tmp_path: Path, env: dict[str, str], *,
                                    min_step: int = 1, timeout: float = 300) -> None:
    """Train ``aevision pretrain ARGV`` once uninterrupted; again, killed with SIGKILL as soon as a
    mid-epoch checkpoint past epoch 1 (and ``min_step``) exists; then ``--resume`` it. The resumed
    weights must equal the uninterrupted ones bit for bit, and no temporary file may be left."""
    from aevision.engine.checkpoint import load_checkpoint
    from aevision.io import read_safetensors

    cmd = [sys.executable, "-m", "aevision", "pretrain", *argv]
    ref = subprocess.run([*cmd, "-o", str(tmp_path / "ref")], env=env, capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "killed"
    proc = subprocess.Popen([*cmd, "-o", str(out)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ckpt, killed_at, deadline = out / "checkpoints" / "last.ckpt", None, time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        loop = None
        if ckpt.is_file():
            try:
                loop = load_checkpoint(ckpt)["loop"]
            except Exception:  # being replaced right now; look again
                loop = None
        if loop is not None and loop.epoch >= 1 and loop.step >= min_step and loop.batch > 0:
            proc.send_signal(signal.SIGKILL)
            killed_at = loop.step
            break
        time.sleep(0.02)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert killed_at is not None and not (out / "model.safetensors").exists()
    resumed = subprocess.run([*cmd, "-o", str(out), "--resume"], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    a = read_safetensors(tmp_path / "ref" / "model.safetensors")
    b = read_safetensors(out / "model.safetensors")
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert not list((out / "checkpoints").glob(".*.tmp"))
