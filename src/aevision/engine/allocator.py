"""Keep freed memory for reuse during training (glibc malloc tuning).

A training step frees and re-allocates the same large buffers (activations, gradients) every
step. glibc serves blocks above its mmap threshold (at most 32 MiB) with fresh ``mmap`` calls and
returns them to the system on ``free``, so every step pays page faults to map and zero the same
memory again: on a 2-core machine the documents' CIFAR autoencoder spent ~45% of its CPU time in
the kernel. Turning off mmap for allocations and trimming keeps that memory in the heap, where
the next step finds it. The cost: the process keeps its peak memory until it exits, the usual
trade for a training process. Set ``AEVISION_MALLOC_TUNING=0`` (or ``train.tune_allocator=false``)
to leave malloc alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_done = False


def tune_malloc() -> bool:
    """Tell glibc malloc to keep freed memory (no mmap, no trim); True when applied."""
    global _done
    if _done:
        return True
    if os.environ.get("AEVISION_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or another libc without mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
    _done = ok
    if not ok:
        log.debug("mallopt refused the allocator tuning; continuing without it")
    return ok
