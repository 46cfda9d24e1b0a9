"""``aevision keypoints``: what a deep spatial autoencoder's keypoints track, measured and drawn.

    aevision keypoints runs/dsae -o runs/dsae/keypoints      # the run's own data, test split
    aevision keypoints runs/dsae my_videos/ --keep 8 --save-model runs/dsae-8 -o out/

Writes ``keypoints.json`` (jitter; with ground truth, R^2 of the true centres from keypoints and
the classification accuracy of a linear probe, both fitted on the training split and scored on
``--split``), ``keypoints.safetensors`` (every frame's keypoints and presence) and, for the first
``--show`` sequences, a PNG strip and an animated GIF with the keypoints drawn over the frames.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from aevision.cli.common import Parser


def add_parser(sub: Any) -> None:
    p: Parser = sub.add_parser(
        "keypoints", help="evaluate and draw a DSAE's keypoints on videos",
        description="Keypoints of a trained dsae model on a video dataset (--dataset) or a folder of "
        "videos stored as frames: tracking R^2 and classification when the data has ground truth, "
        "jitter always, and PNG strips + GIFs of the keypoints over the frames.")
    p.add_argument("model", help="model folder (from 'aevision pretrain --model dsae')")
    p.add_argument("frames", nargs="?", metavar="FRAMES_DIR",
                   help="videos as folders of frames (see 'frames:PATH' in 'aevision datasets')")
    p.add_argument("--dataset", metavar="NAME", help="a registered video dataset (default: the one the "
                   "model was trained on, with the same options)")
    p.add_argument("--split", choices=("val", "test"), default="test",
                   help="which split to evaluate and draw (default: test)")
    p.add_argument("--data-root", metavar="DIR", help="where datasets live")
    p.add_argument("--seed", type=int, help="seed of the validation split (default: the run's seed)")
    p.add_argument("--keep", type=int, metavar="K",
                   help="prune to the K keypoints with the highest feature presence on training frames")
    p.add_argument("--save-model", metavar="DIR", help="with --keep: save the pruned model here")
    p.add_argument("--show", type=int, default=4, metavar="N", help="sequences to draw (default 4)")
    p.add_argument("--trail", type=int, default=6, help="frames of trail behind each keypoint")
    p.add_argument("--scale", type=int, default=4, help="enlargement of the drawn frames (default 4)")
    p.add_argument("--fps", type=float, default=8.0, help="GIF frame rate (default 8)")
    p.add_argument("--batch-size", type=int, default=512, help="frames per forward pass")
    p.add_argument("--device", default="cpu")
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="output folder")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from aevision.api import load
    from aevision.cli.common import positive
    from aevision.config import to_dict
    from aevision.data import VideoSet, load_dataset
    from aevision.errors import AevisionError
    from aevision.io import write_json, write_safetensors
    from aevision.models import save_model
    from aevision.models.dsae import keypoint_encoder, prune_keypoints
    from aevision.provenance import machine_info
    from aevision.report.keypoints import draw_keypoints, save_gif, save_strip
    from aevision.tasks.keypoints import (
        frame_classification,
        jitter,
        normalised_centres,
        tracking_r2,
        video_keypoints,
    )

    for name in ("--keep", "--trail", "--scale", "--batch-size"):
        positive(name, getattr(args, name[2:].replace("-", "_")))
    if args.show < 0:
        raise AevisionError(f"--show: got {args.show}, expected an integer >= 0")
    if args.fps <= 0:
        raise AevisionError(f"--fps: got {args.fps}, expected a number > 0")
    if args.save_model and args.keep is None:
        raise AevisionError("--save-model: only with --keep K (the pruned model is what it saves)")
    if args.dataset and args.frames:
        raise AevisionError("give either FRAMES_DIR or --dataset NAME, not both")
    model = load(args.model, args.device)
    keypoint_encoder(model)
    c, h, w = model.input_shape
    data_cfg, run_seed = _data_config(args, model_dir=Path(args.model))
    data_cfg.channels, data_cfg.image_size = c, [h, w]
    name = data_cfg.name
    args.seed = run_seed if args.seed is None else args.seed
    splits = load_dataset(data_cfg, args.seed)
    train = splits.train
    target = train if args.frames else getattr(splits, args.split)
    if not isinstance(train, VideoSet):
        raise AevisionError(f"{name}: not a video dataset (its images have no frame order); "
                            f"use --dataset moving-shapes or a FRAMES_DIR")
    if target is None or len(target) == 0:
        raise AevisionError(f"--split {args.split}: dataset {name!r} has no {args.split} split")
    out = Path(args.out)
    metrics: dict[str, Any] = {"model": str(args.model), "data": to_dict(data_cfg),
                               "split": "all" if args.frames else args.split, "seed": args.seed,
                               "keep": args.keep}
    if args.keep is not None:
        model = prune_keypoints(model, train.images, args.keep)
        metrics["pruned"] = model.spec["pruned"]
        if args.save_model:
            save_model(model, args.save_model, extra={"pruned_from": str(args.model)})
            print(f"saved the pruned model ({args.keep} keypoints) to {args.save_model}")
    kp = video_keypoints(model, target, args.batch_size, args.device)
    metrics["keypoints"] = int(kp.points.shape[2])
    metrics["sequences"], metrics["frames_per_sequence"] = len(target), target.sequence_length
    metrics["jitter"] = jitter(kp.points)
    metrics["mean_presence"] = kp.presence.mean(dim=(0, 1)).tolist()
    if target.centres is not None:
        metrics["jitter_ground_truth"] = jitter(normalised_centres(target)[:, :, :1])
    lines = [f"jitter {metrics['jitter']:.3g} (mean squared second difference, [-1, 1] units)"]
    if not args.frames:
        feats = {s: video_keypoints(model, getattr(splits, s), args.batch_size, args.device).features()
                 for s in ("train", "val") if getattr(splits, s) is not None}
        val = splits.val if "val" in feats else None
        if train.centres is not None and target.centres is not None:
            metrics["tracking"] = tracking_r2(feats["train"], train, kp.features(), target,
                                              feats.get("val"), val, seed=args.seed)
            lines.append(f"R^2 of the main object's centre from keypoints: {metrics['tracking']['r2']:.4f}")
        if train.labels is not None and target.labels is not None:
            metrics["classification"] = frame_classification(feats["train"], train, kp.features(), target,
                                                             feats.get("val"), val, seed=args.seed)
            cls = metrics["classification"]
            lines.append(f"linear-probe accuracy from keypoints: {cls['accuracy']:.4f} "
                         f"(majority class {cls['majority_class_rate']:.3f}, "
                         f"guessing {cls['uniform_guess_rate']:.3f})")
    metrics["machine"] = machine_info()
    write_json(out / "keypoints.json", metrics)
    write_safetensors(out / "keypoints.safetensors",
                      {"points": kp.points, "presence": kp.presence},
                      metadata={"layout": "points (sequences, frames, keypoints, xy in [-1, 1]); "
                                          "presence (sequences, frames, keypoints)"})
    truth = normalised_centres(target) if target.centres is not None else None
    for i in range(min(args.show, len(target))):
        images = draw_keypoints(target.frames[i], kp.points[i], trail=args.trail, scale=args.scale,
                                truth=None if truth is None else truth[i])
        save_strip(out / f"sequence{i}.png", images)
        save_gif(out / f"sequence{i}.gif", images, fps=args.fps)
    for line in lines:
        print(line)
    print(f"wrote {out}/keypoints.json, keypoints.safetensors"
          + (f" and {min(args.show, len(target))} PNG strips + GIFs" if args.show else ""))
    return 0


def _data_config(args: argparse.Namespace, model_dir: Path) -> tuple[Any, int]:
    """The data to look at: FRAMES_DIR, --dataset, or else the model's own training data.

    A dataset named like the model's training data gets that run's options too (generated sets:
    the same sizes and seed), so ``aevision keypoints RUN`` scores the run's own held-out split.
    """
    from aevision.config import DataConfig, from_dict
    from aevision.errors import AevisionError
    from aevision.io import read_json

    folder = model_dir.parent if model_dir.suffix == ".safetensors" else model_dir
    saved = read_json(folder / "config.json", "model config")
    run = (saved.get("config") or {}) if isinstance(saved, dict) else {}
    seed = run.get("seed", 0) if isinstance(run.get("seed", 0), int) else 0
    if args.frames:
        return DataConfig(name=f"frames:{args.frames}", root=args.data_root, val_fraction=0.0), seed
    trained = run.get("data")
    if isinstance(trained, dict) and (args.dataset is None or args.dataset == trained.get("name")):
        cfg = from_dict(DataConfig, {k: v for k, v in trained.items()
                                     if k not in ("clip_length", "clip_stride", "limit")}, "data")
        cfg.root = args.data_root or cfg.root
        return cfg, seed
    if args.dataset is None:
        raise AevisionError(f"{folder}: no training data recorded in config.json; "
                            f"give FRAMES_DIR or --dataset NAME")
    return DataConfig(name=args.dataset, root=args.data_root), seed
