"""The allocator tuning lasts as long as a training run, not as long as the process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from aevision.engine import allocator
from conftest import tiny_config

# A process that trained and then extracts features (large temporaries freed each batch, a small
# result kept between one batch's and the next's) grew without bound while freed memory stayed in
# the heap: the patches model's benchmark reached 21.5 GB and was killed. What shows, exactly,
# whether the tuning is in force: a 64 MB block is mapped on its own (glibc's mallinfo2 counts
# it) by default, and carved from the heap under the tuning.
SCRIPT = """
import ctypes, json, sys, torch
import aevision
from aevision.engine.allocator import tuned_malloc

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2

def mapped_alone():
    before = libc.mallinfo2().hblkhd
    block = torch.empty(16 * 2**20)  # 64 MB
    mapped = libc.mallinfo2().hblkhd - before >= 64 * 2**20
    del block
    return mapped

found = {"default": mapped_alone()}
with tuned_malloc() as tuned:
    found["tuned"], found["in_tuned_block"] = tuned, mapped_alone()
found["after_block"] = mapped_alone()
aevision.pretrain(json.loads(sys.argv[1]))  # trains under the tuning, then gives it back
found["after_training"] = mapped_alone()
print(json.dumps(found))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning is Linux-only")
def test_freed_memory_stays_in_the_heap_while_training_and_not_after(tmp_path):
    cfg = tiny_config(tmp_path, train={"epochs": 1, "batch_size": 32, "progress": False})
    out = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(cfg)], capture_output=True, text=True,
                         timeout=300, env={**allocator_env(), "PYTHONPATH": ":".join(sys.path)})
    if "undefined symbol: mallinfo2" in out.stderr or "cannot open shared object file" in out.stderr:
        pytest.skip("not glibc 2.33 or later")
    assert out.returncode == 0, out.stderr[-2000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    if not found["tuned"]:
        pytest.skip("this libc has no mallopt")
    assert found == {"default": True, "tuned": True, "in_tuned_block": False, "after_block": True,
                     "after_training": True}


def allocator_env() -> dict[str, str]:
    """This environment without glibc's malloc variables (their presence turns the tuning off)."""
    return {k: v for k, v in os.environ.items()
            if k not in allocator.GLIBC_VARIABLES and k != "AEVISION_MALLOC_TUNING"}


def test_blocks_nest_and_the_user_can_turn_the_tuning_off(monkeypatch):
    monkeypatch.setattr(allocator, "_permanent", False)
    monkeypatch.setenv("AEVISION_MALLOC_TUNING", "0")
    with allocator.tuned_malloc() as tuned:
        assert tuned is False
    monkeypatch.delenv("AEVISION_MALLOC_TUNING")
    monkeypatch.setenv("MALLOC_MMAP_MAX_", "0")  # glibc's own variable: the process's choice
    with allocator.tuned_malloc() as tuned:
        assert tuned is False
    monkeypatch.delenv("MALLOC_MMAP_MAX_")
    if allocator._libc() is None:
        pytest.skip("no glibc mallopt here")
    with allocator.tuned_malloc() as outer:
        with allocator.tuned_malloc() as inner:
            assert outer and inner and allocator._depth == 2
        assert allocator._depth == 1
    assert allocator._depth == 0
    with allocator.tuned_malloc(enabled=False) as tuned:
        assert tuned is False
