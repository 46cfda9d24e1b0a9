"""Keep freed memory for reuse while training (glibc malloc tuning), and only then.

A training step frees and re-allocates the same large buffers (activations, gradients) every
step. glibc serves blocks above its mmap threshold (at most 32 MiB) with fresh ``mmap`` calls and
returns them to the system on ``free``, so every step pays page faults to map and zero the same
memory again: on a 2-core machine the documents' CIFAR autoencoder spent ~45% of its CPU time in
the kernel. Turning off mmap for allocations and trimming keeps that memory in the heap, where
the next step finds it.

That suits a loop that allocates the same sizes again and again, and nothing else: outside one,
large temporaries freed between small allocations that stay (feature extraction: four 266 MB
maps a batch of the ``patches`` model, then its 1.4 MB of features kept) leave holes the heap
cannot give back, and the process grows by most of a batch's temporaries every batch (a benchmark
that extracted features after pretraining in the same process reached 21.5 GB and was killed).
So :func:`tuned_malloc` holds the tuning for one training run, and on leaving it glibc's defaults
come back and the heap's free memory returns to the system (``malloc_trim``).
Set ``AEVISION_MALLOC_TUNING=0`` (or ``train.tune_allocator=false``) to leave malloc alone; glibc's
own ``MALLOC_MMAP_MAX_`` / ``MALLOC_TRIM_THRESHOLD_`` variables, when set, are the process's
choice, and the engine then leaves malloc alone too.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
# glibc's defaults (mallopt(3)): what a process has before anyone tunes it
_DEFAULT_TRIM_THRESHOLD = 128 * 1024
_DEFAULT_MMAP_MAX = 65536
_KEEP_FREED = ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1))
_DEFAULTS = ((_M_MMAP_MAX, _DEFAULT_MMAP_MAX), (_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD))
GLIBC_VARIABLES = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_")

_permanent = False  # tune_malloc(): for the rest of the process
_depth = 0  # tuned_malloc() blocks open


def _libc() -> Any | None:
    """glibc, or None where malloc is not ours to tune (not Linux, the user said no, glibc's
    malloc variables set, a libc without mallopt)."""
    if os.environ.get("AEVISION_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return None
    if any(v in os.environ for v in GLIBC_VARIABLES):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):  # musl or another libc without mallopt
        return None
    return libc


def _set(libc: Any, options: tuple[tuple[int, int], ...]) -> bool:
    return all(libc.mallopt(option, value) == 1 for option, value in options)


def tune_malloc() -> bool:
    """Keep freed memory for the rest of the process (benchmarks that time plain loops beside the
    engine's, under the same allocator); True when applied."""
    global _permanent
    libc = _libc()
    if not _permanent and libc is not None:
        _permanent = _set(libc, _KEEP_FREED)
    return _permanent


@contextmanager
def tuned_malloc(enabled: bool = True) -> Iterator[bool]:
    """Keep freed memory inside the block (a training run; blocks nest); leaving the outermost one
    restores glibc's defaults and returns free heap memory to the system. Yields whether the tuning
    is in force."""
    global _depth
    libc = _libc() if enabled else None
    if libc is None or _permanent:
        yield _permanent
        return
    applied = _depth > 0 or _set(libc, _KEEP_FREED)
    if not applied:
        log.debug("mallopt refused the allocator tuning; continuing without it")
        yield False
        return
    _depth += 1
    try:
        yield True
    finally:
        _depth -= 1
        if _depth == 0 and not _permanent:
            _set(libc, _DEFAULTS)
            libc.malloc_trim(0)
