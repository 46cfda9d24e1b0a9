"""What every written result says about where it came from: aevision's version and the machine.

A foundation module (it imports nothing of aevision), so that models, tasks and the run lifecycle
can stamp their files without importing the package root or the API.
"""

from __future__ import annotations

import os
import platform
from typing import Any

import torch

__version__ = "0.1.0"


def machine_info() -> dict[str, Any]:
    """The interpreter, torch, the OS, the CPU count and threads, and the GPU if any."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
