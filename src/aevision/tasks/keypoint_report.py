"""A DSAE's keypoints on a video dataset, measured and drawn: what ``aevision keypoints`` runs.

:func:`keypoint_report` scores the keypoints (jitter always; with ground truth, tracking R^2 and
the classification accuracy of a linear probe, both fitted on the training split) and
:func:`write_keypoint_report` writes ``keypoints.json``, ``keypoints.safetensors`` and PNG strips +
GIFs of the first sequences.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aevision.config import DataConfig, to_dict
from aevision.data import VideoSet, load_dataset
from aevision.errors import AevisionError
from aevision.io import write_json, write_safetensors
from aevision.models.base import Autoencoder
from aevision.models.dsae import keypoint_encoder, prune_keypoints
from aevision.models.io import load_model, model_files, same_dataset, save_model, saved_run, trained_on
from aevision.provenance import machine_info
from aevision.tasks.keypoints import (
    VideoKeypoints,
    frame_classification,
    jitter,
    normalised_centres,
    tracking_r2,
    video_keypoints,
)


@dataclass
class KeypointReport:
    """``metrics``: what ``keypoints.json`` holds; ``keypoints`` of every ``target`` sequence."""

    metrics: dict[str, Any]
    keypoints: VideoKeypoints
    target: VideoSet
    model: Autoencoder


def keypoint_data(model_path: str | os.PathLike[str], frames: str | None = None,
                  dataset: str | None = None, data_root: str | None = None) -> tuple[DataConfig, int]:
    """The data to look at: ``frames`` (a folder of videos), ``dataset``, or else the model's own
    training data, and the run's seed.

    A dataset named like the model's training data gets that run's options too (generated sets:
    the same sizes and seed), so ``aevision keypoints RUN`` scores the run's own held-out split.
    """
    seed = saved_run(model_path)[1]
    if frames:
        return DataConfig(name=f"frames:{frames}", root=data_root, val_fraction=0.0), seed
    trained = trained_on(model_path)
    if trained is not None and (dataset is None or same_dataset(dataset, trained.name)):
        # whole sequences, not clips; its data.limit stays: the run's own sequences and held-out split
        trained.clip_length = trained.clip_stride = None
        trained.root = data_root or trained.root
        return trained, seed
    if dataset is None:
        raise AevisionError(f"{model_files(model_path)[0]}: no training data recorded in config.json; "
                            f"give FRAMES_DIR or --dataset NAME")
    return DataConfig(name=dataset, root=data_root), seed


def keypoint_report(model_path: str | os.PathLike[str], *, frames: str | None = None,
                    dataset: str | None = None, split: str = "test", data_root: str | None = None,
                    seed: int | None = None, keep: int | None = None,
                    save_pruned: str | os.PathLike[str] | None = None, batch_size: int = 512,
                    device: str = "cpu") -> KeypointReport:
    """Keypoints of a trained ``dsae`` model on ``split`` of its data (every sequence of ``frames``),
    pruned first to the ``keep`` most present ones (saved to ``save_pruned`` when given)."""
    if save_pruned and keep is None:
        raise AevisionError("--save-model: only with --keep K (the pruned model is what it saves)")
    if dataset and frames:
        raise AevisionError("give either FRAMES_DIR or --dataset NAME, not both")
    model = load_model(model_path, device)
    keypoint_encoder(model)
    c, h, w = model.input_shape
    data_cfg, run_seed = keypoint_data(model_path, frames, dataset, data_root)
    data_cfg.channels, data_cfg.image_size = c, [h, w]
    seed = run_seed if seed is None else seed
    splits = load_dataset(data_cfg, seed)
    train = splits.train
    target = train if frames else getattr(splits, split)
    if not isinstance(train, VideoSet):
        raise AevisionError(f"{data_cfg.name}: not a video dataset (its images have no frame order); "
                            f"use --dataset moving-shapes or a FRAMES_DIR")
    if target is None or len(target) == 0:
        raise AevisionError(f"--split {split}: dataset {data_cfg.name!r} has no {split} split")
    metrics: dict[str, Any] = {"model": str(model_path), "data": to_dict(data_cfg),
                               "split": "all" if frames else split, "seed": seed, "keep": keep}
    if keep is not None:
        model = prune_keypoints(model, train.images, keep)
        metrics["pruned"] = model.spec["pruned"]
        if save_pruned:
            save_model(model, save_pruned, extra={"pruned_from": str(model_path)})
    kp = video_keypoints(model, target, batch_size, device)
    metrics["keypoints"] = int(kp.points.shape[2])
    metrics["sequences"], metrics["frames_per_sequence"] = len(target), target.sequence_length
    metrics["jitter"] = jitter(kp.points)
    metrics["mean_presence"] = kp.presence.mean(dim=(0, 1)).tolist()
    if target.centres is not None:
        metrics["jitter_ground_truth"] = jitter(normalised_centres(target)[:, :, :1])
    if not frames:
        metrics.update(_probes(model, splits, kp, target, seed, batch_size, device))
    metrics["machine"] = machine_info()
    return KeypointReport(metrics, kp, target, model)


def _probes(model: Autoencoder, splits: Any, kp: VideoKeypoints, target: VideoSet, seed: int,
            batch_size: int, device: str) -> dict[str, Any]:
    """Tracking R^2 and classification from keypoints, where the data has the ground truth."""
    feats = {s: video_keypoints(model, getattr(splits, s), batch_size, device).features()
             for s in ("train", "val") if getattr(splits, s) is not None}
    train, val = splits.train, splits.val if "val" in feats else None
    found: dict[str, Any] = {}
    if train.centres is not None and target.centres is not None:
        found["tracking"] = tracking_r2(feats["train"], train, kp.features(), target,
                                        feats.get("val"), val, seed=seed)
    if train.labels is not None and target.labels is not None:
        found["classification"] = frame_classification(feats["train"], train, kp.features(), target,
                                                       feats.get("val"), val, seed=seed)
    return found


def write_keypoint_report(report: KeypointReport, out: str | os.PathLike[str], *, show: int = 4,
                          trail: int = 6, scale: int = 4, fps: float = 8.0) -> int:
    """``out/keypoints.json``, ``keypoints.safetensors`` and, for the first ``show`` sequences, a
    PNG strip and a GIF of the keypoints over the frames; returns how many sequences were drawn."""
    from aevision.report.keypoints import draw_keypoints, save_gif, save_strip

    out, kp, target = Path(out), report.keypoints, report.target
    write_json(out / "keypoints.json", report.metrics)
    write_safetensors(out / "keypoints.safetensors",
                      {"points": kp.points, "presence": kp.presence},
                      metadata={"layout": "points (sequences, frames, keypoints, xy in [-1, 1]); "
                                          "presence (sequences, frames, keypoints)"})
    truth = normalised_centres(target) if target.centres is not None else None
    drawn = min(show, len(target))
    for i in range(drawn):
        images = draw_keypoints(target.frames[i], kp.points[i], trail=trail, scale=scale,
                                truth=None if truth is None else truth[i])
        save_strip(out / f"sequence{i}.png", images)
        save_gif(out / f"sequence{i}.gif", images, fps=fps)
    return drawn
