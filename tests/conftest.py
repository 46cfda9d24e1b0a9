"""Shared fixtures: small generated data only; nothing here downloads or reads ../shared."""

from __future__ import annotations

import importlib
import os
import struct
import sys
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
