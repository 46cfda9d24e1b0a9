"""The learning rate over a run: an optional linear warmup, then constant, cosine or linear decay to
zero (a linear decay after a warmup is the triangular schedule of fast CIFAR training).

Warmup keeps Adam's first steps small while its moment estimates are averages of only a few
gradients, the usual guard for high learning rates and large batches. (It is no cure for every
instability: the GDN codec of bench/compression.py blew up during a warmup as well.)
The schedule is stepped once per optimizer step (a skipped non-finite step does not count).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from aevision.config import TrainConfig


def lr_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig,
                 total_steps: int) -> torch.optim.lr_scheduler.LRScheduler | None:
    """``cfg.scheduler`` over ``total_steps`` optimizer steps, after ``cfg.warmup_steps`` of linear
    warmup (from lr / warmup_steps up to lr); None when the rate never changes."""
    if cfg.warmup_steps == 0:
        # the plain cosine stays torch's own: runs and checkpoints from before warmup existed
        # resume and reproduce exactly
        if cfg.scheduler == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
        if cfg.scheduler == "none":
            return None
    warmup = min(cfg.warmup_steps, total_steps)
    decay_steps = max(1, total_steps - warmup)
    decay = DECAYS[cfg.scheduler]

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return decay(min(1.0, (step - warmup) / decay_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# the rate after the warmup, as a fraction of lr, at a fraction t of the decay steps done
DECAYS: dict[str, Callable[[float], float]] = {
    "none": lambda t: 1.0,
    "cosine": lambda t: 0.5 * (1.0 + math.cos(math.pi * t)),
    "linear": lambda t: 1.0 - t,
}


def follow_plan(scheduler: torch.optim.lr_scheduler.LRScheduler, total_steps: int) -> None:
    """After a resume, make a restored plain cosine decay over this run's ``total_steps`` (its
    state holds the old ``T_max``: a run resumed with more epochs went past it, and the rate
    climbed back to its maximum). The rate is set to the new curve's at the step reached, from
    which torch's recursive update follows it exactly. The other schedules are recomputed from
    the step count and need nothing."""
    cosine = isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR)
    if not cosine or scheduler.T_max == total_steps:
        return
    scheduler.T_max = total_steps
    t = min(scheduler.last_epoch, total_steps) / total_steps
    for group, base in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, strict=True):
        group["lr"] = scheduler.eta_min + (base - scheduler.eta_min) * 0.5 * (1 + math.cos(math.pi * t))
    scheduler._last_lr = [group["lr"] for group in scheduler.optimizer.param_groups]
