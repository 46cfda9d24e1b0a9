"""What keypoints are worth: tracking quality, jitter, and classification from keypoints.

- Tracking: a ridge regression from a frame's features to the true centre of an object, fitted on
  the training sequences (strength chosen on the validation sequences), R^2 on held-out test
  sequences. Any features work (keypoints, another encoder's code, raw pixels), so the numbers
  compare representations under one protocol.
- Jitter: mean over sequences, interior frames and keypoints of ||k_{t+1} - 2 k_t + k_{t-1}||^2,
  in the keypoints' own [-1, 1] units (the quantity the smoothness regularizer penalises, per
  keypoint). Ground-truth tracks have a jitter too (bounces), reported beside it as the floor.
- Classification: :class:`~aevision.tasks.probe.LinearProbe` on per-frame features, the same probe
  every other encoder is judged with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from aevision.data.imageset import float_batches
from aevision.data.video import VideoSet
from aevision.models.base import Autoencoder
from aevision.models.dsae import keypoint_encoder
from aevision.models.inference import eval_mode
from aevision.regularizers.smoothness import second_difference
from aevision.tasks.probe import LinearProbe
from aevision.tasks.regression import RidgeProbe


@dataclass
class VideoKeypoints:
    """``points``: (N, T, K, 2) as (x, y) in [-1, 1]; ``presence``: (N, T, K) softmax peaks."""

    points: Tensor
    presence: Tensor

    def features(self) -> Tensor:
        """Per-frame code, as ``encode`` gives it: (N*T, 2K)."""
        return self.points.flatten(2).flatten(0, 1)

    def select(self, keep: Tensor | list[int]) -> VideoKeypoints:
        idx = torch.as_tensor(keep, dtype=torch.long)
        return VideoKeypoints(self.points[:, :, idx], self.presence[:, :, idx])


@torch.no_grad()
def video_keypoints(model: Autoencoder, videos: VideoSet, batch_size: int = 512,
                    device: str | torch.device | None = None) -> VideoKeypoints:
    """Keypoints and presence of every frame of ``videos``."""
    enc = keypoint_encoder(model)
    model.check_input(videos.frames)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    points, presence = [], []
    with eval_mode(model):
        for x in float_batches(videos.images, batch_size, device):
            kp, p = enc.keypoints(x)
            points.append(kp.float().cpu())
            presence.append(p.float().cpu())
    n, t = len(videos), videos.sequence_length
    k = enc.num_keypoints
    return VideoKeypoints(torch.cat(points).view(n, t, k, 2), torch.cat(presence).view(n, t, k))


def jitter(points: Tensor) -> float:
    """Mean squared second difference over time of (N, T, K, 2) tracks (NaN-free tracks only)."""
    if points.shape[1] < 3:
        return float("nan")
    acc = second_difference(points.double()).pow(2).sum(dim=-1)  # (N, T-2, K)
    ok = torch.isfinite(acc)
    return float(acc[ok].mean()) if ok.any() else float("nan")


def relative_jitter(points: Tensor) -> float:
    """Scale-free jitter: sum of squared second differences over sum of squared first differences.

    Absolute jitter also falls when keypoints simply move less (a keypoint parked in one place
    has none); this ratio asks how jerky the motion is for how much motion there is.
    """
    if points.shape[1] < 3:
        return float("nan")
    p = points.double()
    first = (p[:, 1:] - p[:, :-1]).pow(2).sum(dim=-1)
    second = second_difference(p).pow(2).sum(dim=-1)
    ok_first, ok_second = torch.isfinite(first), torch.isfinite(second)
    return float(second[ok_second].sum() / first[ok_first].sum().clamp_min(1e-30))


def normalised_centres(videos: VideoSet) -> Tensor:
    """Ground-truth centres in the keypoints' units: pixel centres 0..W-1 -> -1..1. (N, T, J, 2)."""
    if videos.centres is None:
        raise ValueError(f"{videos.name}: no ground-truth centres")
    _, h, w = videos.image_shape
    scale = videos.centres.new_tensor([max(w - 1, 1), max(h - 1, 1)])
    return videos.centres / scale * 2 - 1


def tracking_r2(f_train: Tensor, train: VideoSet, f_test: Tensor, test: VideoSet,
                f_val: Tensor | None = None, val: VideoSet | None = None, slot: int = 0,
                seed: int = 0) -> dict[str, Any]:
    """R^2 on ``test`` of a ridge map from per-frame features to the centre of object ``slot``.

    Features are (N*T, D) in frame order. Frames where the object is absent are left out.
    """
    def rows(f: Tensor, v: VideoSet) -> tuple[Tensor, Tensor, Tensor]:
        if v.centres is None:
            raise ValueError(f"{v.name}: no ground-truth centres")
        y = v.centres[:, :, slot].reshape(-1, 2)
        groups = torch.arange(len(v)).repeat_interleave(v.sequence_length)
        ok = torch.isfinite(y).all(dim=1)
        return f[ok], y[ok], groups[ok]

    x_tr, y_tr, g_tr = rows(f_train, train)
    x_te, y_te, _ = rows(f_test, test)
    if f_val is not None and val is not None:
        x_va, y_va, _ = rows(f_val, val)
        probe = RidgeProbe(seed=seed).fit(x_tr, y_tr, x_va, y_va)
    else:
        probe = RidgeProbe(seed=seed).fit(x_tr, y_tr, groups=g_tr)
    return {"r2": probe.score(x_te, y_te), "r2_train": probe.score(x_tr, y_tr), "alpha": probe.alpha_,
            "train_frames": len(x_tr), "test_frames": len(x_te)}


def frame_classification(f_train: Tensor, train: VideoSet, f_test: Tensor, test: VideoSet,
                         f_val: Tensor | None = None, val: VideoSet | None = None, step: int = 1,
                         seed: int = 0) -> dict[str, Any]:
    """Test accuracy of a linear probe from per-frame features to the sequence label.

    ``step`` > 1 keeps every step-th training/validation frame (neighbouring frames are near
    copies; the test set is always scored on every frame).
    """
    def rows(f: Tensor, v: VideoSet, s: int) -> tuple[Tensor, Tensor]:
        labels = v.frame_labels()
        if labels is None:
            raise ValueError(f"{v.name}: unlabelled")
        return f[::s], labels[::s]

    x_tr, y_tr = rows(f_train, train, step)
    x_te, y_te = rows(f_test, test, 1)
    n_classes = max(train.num_classes, test.num_classes)
    if f_val is not None and val is not None:
        x_va, y_va = rows(f_val, val, step)
        probe = LinearProbe(seed=seed).fit(x_tr, y_tr, x_va, y_va, n_classes=n_classes)
    else:
        probe = LinearProbe(seed=seed).fit(x_tr, y_tr, n_classes=n_classes)
    counts = torch.bincount(y_te, minlength=n_classes).double()
    return {"accuracy": probe.score(x_te, y_te), "majority_class_rate": float(counts.max() / counts.sum()),
            "uniform_guess_rate": 1.0 / n_classes, "C": probe.c_, "train_frames": len(x_tr),
            "test_frames": len(x_te)}
