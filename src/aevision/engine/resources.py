"""Memory guard: on a shared machine a run should fail with a message, not be OOM-killed.

The Linux OOM killer ends a process with SIGKILL and no explanation (and may take a neighbour's
job with it). Capping the data segment (``RLIMIT_DATA``, which since Linux 4.7 counts private
anonymous mappings, i.e. every tensor) turns "killed" into a failed allocation that aevision
reports as a one-line error.
"""

from __future__ import annotations

import logging
import sys

import torch

from aevision.errors import AevisionError

log = logging.getLogger(__name__)


def limit_memory(gib: float | None) -> bool:
    """Cap this process's heap at ``gib`` GiB; returns whether a limit is in place.

    Only for CPU runs: GPU drivers reserve large address ranges that such a cap would break.
    """
    if gib is None:
        return False
    try:
        import resource
    except ImportError:  # not on POSIX
        log.warning("train.max_memory_gb is not supported on this platform; ignored")
        return False
    limit = int(gib * 2**30)
    used = data_segment_bytes()
    if used is not None and used >= limit:
        raise AevisionError(f"train.max_memory_gb: got {gib:g}, but this process already uses "
                            f"{used / 2**30:.2f} GiB (data and model loaded); allow more")
    _soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
    return True


def is_out_of_memory(e: BaseException) -> bool:
    """CUDA's OutOfMemoryError, Python's MemoryError, or the CPU allocator's failure."""
    if isinstance(e, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(e).lower()
    return "can't allocate memory" in text or "out of memory" in text


def data_segment_bytes() -> int | None:
    """What RLIMIT_DATA counts for this process now (Linux ``VmData``), or None elsewhere."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmData:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def peak_rss_mib() -> float | None:
    """This process's peak resident memory so far, in MiB (None where POSIX ``getrusage`` is
    missing): what a user sizes a machine by, recorded with each run's timing."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)
