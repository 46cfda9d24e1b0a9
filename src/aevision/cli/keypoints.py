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
from typing import Any

from aevision.cli.common import Parser, check_flag, positive
from aevision.validation import plural


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
    from aevision.tasks.keypoint_report import keypoint_report, write_keypoint_report

    positive(args, "--keep", "--trail", "--scale", "--batch-size")
    check_flag(args, "--show", lambda v: v >= 0, "an integer >= 0")
    check_flag(args, "--fps", lambda v: v > 0, "a number > 0")
    report = keypoint_report(args.model, frames=args.frames, dataset=args.dataset, split=args.split,
                             data_root=args.data_root, seed=args.seed, keep=args.keep,
                             save_pruned=args.save_model, batch_size=args.batch_size, device=args.device)
    if args.save_model:
        print(f"saved the pruned model ({plural(args.keep, 'keypoint')}) to {args.save_model}")
    drawn = write_keypoint_report(report, args.out, show=args.show, trail=args.trail, scale=args.scale,
                                  fps=args.fps)
    m = report.metrics
    print(f"jitter {m['jitter']:.3g} (mean squared second difference, [-1, 1] units)")
    if "tracking" in m:
        print(f"R^2 of the main object's centre from keypoints: {m['tracking']['r2']:.4f}")
    if "classification" in m:
        cls = m["classification"]
        print(f"linear-probe accuracy from keypoints: {cls['accuracy']:.4f} "
              f"(majority class {cls['majority_class_rate']:.3f}, "
              f"guessing {cls['uniform_guess_rate']:.3f})")
    print(f"wrote {args.out}/keypoints.json, keypoints.safetensors"
          + (f" and {drawn} PNG strips + GIFs" if args.show else ""))
    return 0
