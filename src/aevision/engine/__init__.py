"""The training engine: a Fabric-driven loop with checkpoints, resume, logs and early stopping."""

from aevision.engine.determinism import seed_everything
from aevision.engine.loop import FitResult, Trainer, make_fabric

__all__ = ["FitResult", "Trainer", "make_fabric", "seed_everything"]
