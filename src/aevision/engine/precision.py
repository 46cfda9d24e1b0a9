"""``train.precision: auto``: bf16-mixed where the hardware computes bfloat16 natively, else 32-true.

On a CPU with native bfloat16 (``avx512_bf16``, or AMX tiles: ``amx_bf16``) a 2048x2048 matmul runs
~4x faster in bf16 than in fp32 and a conv autoencoder's step 1.1-1.6x (the throughput issue,
``bench/throughput.py``); without it oneDNN emulates bf16 by converting every operand, slower than
fp32. A CUDA GPU qualifies when ``torch.cuda.is_bf16_supported()`` (Ampere and later). Everything
else (MPS, TPU, older GPUs) stays 32-true. :func:`resolve_precision` gives the choice and why;
the Trainer logs both.
"""

from __future__ import annotations

from pathlib import Path

import torch

AUTO = "auto"
CPUINFO = Path("/proc/cpuinfo")
BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of native bfloat16 arithmetic


def cpu_bf16_features() -> list[str]:
    """The native bfloat16 features of this CPU (empty: none, or not known here).

    PyTorch's own probes (cpuinfo, any OS) first; on Linux the kernel's flags as well, which also
    name ``amx_bf16`` itself rather than AMX tiles in general."""
    found: list[str] = []
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    if callable(probe) and probe():
        found.append("avx512_bf16")
    try:
        text = CPUINFO.read_text(errors="replace")
    except OSError:
        return found
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.partition(":")[2].split())
            found += [f for f in BF16_FLAGS if f in flags and f not in found]
            break
    return found


def _device_type(accelerator: str) -> str:
    """``train.accelerator`` as the device Fabric will pick: auto is CUDA when there is one."""
    if accelerator == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        return "mps" if mps is not None and mps.is_available() else "cpu"
    return "cuda" if accelerator == "gpu" and torch.cuda.is_available() else accelerator


def resolve_precision(precision: str, accelerator: str) -> tuple[str, str]:
    """``(precision to use, why)``: ``precision`` itself unless it is ``auto``."""
    if precision != AUTO:
        return precision, "as configured"
    device = _device_type(accelerator)
    if device == "cpu":
        features = cpu_bf16_features()
        if features:
            return "bf16-mixed", f"the CPU computes bfloat16 natively ({', '.join(features)})"
        return "32-true", ("the CPU has no native bfloat16 (no avx512_bf16 or amx_bf16 flag): "
                           "emulated bf16 is slower than float32")
    if device == "cuda" and torch.cuda.is_available():
        if torch.cuda.is_bf16_supported():
            return "bf16-mixed", f"the GPU supports bfloat16 ({torch.cuda.get_device_name()})"
        return "32-true", f"the GPU has no bfloat16 support ({torch.cuda.get_device_name()})"
    return "32-true", f"no bfloat16 choice made for accelerator {device!r}"
