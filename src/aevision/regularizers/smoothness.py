"""Temporal smoothness (Finn et al. 2016, "slowness" of keypoints): penalise their acceleration.

On three consecutive frames t-1, t, t+1 of a clip, with codes f_{t-1}, f_t, f_{t+1}:

    g_slow = ||(f_{t+1} - f_t) - (f_t - f_{t-1})||^2

averaged over the clip's interior frames and the batch's clips. Objects move smoothly, so a
keypoint that tracks one has a small second difference, while one that jumps with the pixel noise
has a large one; a track at constant velocity costs nothing. The penalty needs ordered frames:
train on clips (``data.clip_length`` >= 3 on a video dataset).
"""

from __future__ import annotations

from torch import Tensor

from aevision.regularizers.base import LossContext, Regularizer, widened
from aevision.regularizers.registry import REGULARIZERS


def second_difference(z: Tensor) -> Tensor:
    """f_{t+1} - 2 f_t + f_{t-1} along dim 1: (B, T, ...) -> (B, T-2, ...)."""
    return z[:, 2:] - 2 * z[:, 1:-1] + z[:, :-2]


@REGULARIZERS.register("smoothness", "temporal smoothness: weight * mean ||(z_t+1 - z_t) - (z_t - z_t-1)||^2 "
                       "over ordered frames (needs data.clip_length >= 3)")
class TemporalSmoothness(Regularizer):
    term = "smoothness"
    default_weight = 0.2  # on moving-shapes: jitter down 4x, reconstruction unchanged (bench/dsae.py)
    min_frames = 3

    def __init__(self, *, weight: float = default_weight):
        super().__init__(weight=weight)

    def penalty(self, ctx: LossContext) -> Tensor | None:
        """None for batches of single images: they have no order to be smooth in."""
        if ctx.frames is None or ctx.frames < 3:
            return None
        z = widened(ctx.z).reshape(-1, ctx.frames, ctx.z.shape[1])
        return second_difference(z).pow(2).sum(dim=-1).mean()
