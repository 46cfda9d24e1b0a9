"""Claim: a U-Net pretrained on a pool of unlabelled photos of people segments people better than
random init when masks are few (Penn-Fudan and Clothing Co-Parsing, issue #36).

One autoencoder (the whole U-Net, pretrained to inpaint holes) trains once on the pool: the
Clothing Co-Parsing photos without masks and the training photos of both datasets, never a test
photo (a ``union`` dataset; the script checks that no pool file is a test file). Then, per seed,
U-Net segmenters train on person / background masks around its encoder and decoder
("pretrained") or the same architecture from random weights ("scratch"): all training masks, and
10 and 50 masks (the same seeded choice for both inits, with the same optimiser steps: epochs are
sized by steps, not by the mask count). Each segmenter keeps the epoch with the highest mIoU on a
validation split (the segmenters' default ``train.monitor``; 10% of each dataset's training
photos, carved before any mask count is drawn, so the same for every run); the pool's autoencoder
the epoch with the lowest loss on 5% of the pool. Each test split
(Penn-Fudan's fixed 50 photos, CCP's fixed 204 masked photos) is scored once per run, by the
person class's IoU over the whole split; nothing is chosen on it. Every run records its optimiser
steps, the pool's pretraining its time, and its validation IoU with test-time flips as well
(``val_person_iou_hflip``, scored after training: the evidence for ``segment.tta``).

    AEVISION_DATA=/work/shared/datasets python bench/segmentation_photos.py --runs runs/segphotos --reuse
    python bench/segmentation_photos.py --seeds 1 --set pool.train.epochs=1 ...   # a tiny trial

``--set PATH=VALUE`` changes one config value (dotted path, YAML value; recorded in ``config``).
``--continue-from FILE`` (repeatable) takes the runs an earlier results file of this script recorded
under the identical config as done, and trains only the rest: the committed file carries a benchmark
across machines that lost ``--runs``. The pool is pretrained again only when a pretrained run is left.

    python bench/segmentation_photos.py --continue-from bench/results/segmentation_photos.json ...
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import torch

import common
from aevision.config import DataConfig, apply_override
from aevision.data import load_dataset, load_segmentation
from aevision.data.segset import SegSet, SegSplits
from aevision.errors import AevisionError
from aevision.tasks.segmentation import Segmenter, predict_masks, segment, segmentation_metrics

CONFIG: dict[str, Any] = {
    # the pool at one size (Penn-Fudan's landscape photos are stretched to it; the segmenters then
    # run at each dataset's own size: the U-Net is fully convolutional)
    "pool": {
        # options.datasets: every dataset below, with its own options (so its own test split)
        "data": {"name": "union", "image_size": [192, 160], "val_fraction": 0.05},
        "model": {"name": "unet", "channels": [16, 32, 64, 128, 256], "batch_norm": True},
        "regularizers": [{"name": "denoising", "noise": "blocks", "p": 0.25, "block": 16}],
        "augment": {"hflip": True},
        # bf16-mixed: this CPU's native bfloat16 makes a U-Net step ~2x faster (see the segment section)
        "train": {"epochs": 40, "batch_size": 16, "lr": 2e-3, "scheduler": "cosine",
                  "precision": "bf16-mixed"},
    },
    "segment": {
        "decoder": {"stem_channels": 16},
        "augment": {"hflip": True, "zoom": 1.3, "jitter": 0.1},
        # bf16-mixed: a segmenter's step (batch 8, one thread) took 0.70 s instead of 1.33 s at 192 x 128
        # and 2.65 s instead of 6.28 s at 256 x 320, measured interleaved with fp32 on this machine.
        # Quality held: CCP at 10 masks from scratch (seed 0, 600 steps) reached validation person IoU
        # 0.676 in bf16 (567 s) and 0.647 in fp32 (803 s), one run each beside other jobs
        "train": {"batch_size": 8, "lr": 2e-3, "scheduler": "cosine", "precision": "bf16-mixed"},
    },
    "datasets": {
        "penn-fudan": {
            "key": "pennfudan",
            "data": {"name": "penn-fudan", "image_size": [256, 320], "val_fraction": 0.1},
            "all": {"epochs": 100, "freeze_epochs": 5, "inits": ["pretrained", "scratch"]},  # 1,400 steps
            "few": {"epochs": 40, "epoch_steps": 15, "freeze_epochs": 10},  # 600 steps at any mask count
            "budgets": [10],
        },
        "clothing-co-parsing": {
            "key": "ccp",
            "data": {"name": "clothing-co-parsing", "image_size": [192, 128], "val_fraction": 0.1},
            "all": {"epochs": 30, "freeze_epochs": 2, "inits": ["pretrained"]},  # 2,700 steps
            "few": {"epochs": 40, "epoch_steps": 15, "freeze_epochs": 10},
            "budgets": [10, 50],
        },
    },
}


def parse_args(argv: list[str] | None = None) -> Any:
    p = common.parser(__doc__, "segmentation_photos.json", data=True, runs="runs/bench-segphotos",
                      reuse="read back runs that finished in --runs under the identical key")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE")
    p.add_argument("--only", choices=["few", "all"],
                   help="a trial: only the few-mask runs, or only the all-mask ones")
    p.add_argument("--dataset", dest="datasets", action="append", choices=list(CONFIG["datasets"]),
                   help="a trial: only this dataset's runs (repeatable; the pool is the same)")
    p.add_argument("--continue-from", dest="earlier", action="append", default=[], metavar="FILE",
                   help="an earlier results file of this script: its runs of the same config count as done")
    return p.parse_args(argv)


def settable(section: list[str], key: str) -> bool:
    """Where ``--set`` may add a key: the sections aevision checks itself (a typo there is an error
    naming it), and a schedule's ``epoch_steps``; no other key of the schedules this script reads."""
    top, part = section[:1], section[2:3]
    return top in (["pool"], ["segment"]) or (top == ["datasets"] and (
        part == ["data"] or (part in (["all"], ["few"]) and key == "epoch_steps")))


def configured(overrides: list[str]) -> dict[str, Any]:
    """:data:`CONFIG` with each ``--set`` applied (a path that does not exist is an error)."""
    cfg = copy.deepcopy(CONFIG)
    for assignment in overrides:
        try:
            apply_override(cfg, assignment, new_key=settable)
        except AevisionError as e:
            raise SystemExit(f"--set: {e}") from None
    return cfg


def pool_data(cfg: dict[str, Any], root: str | None) -> tuple[dict[str, Any], Any]:
    """The pool's pretraining config (before its seed and folder) and its data: every dataset of
    ``cfg``, each with its own options (so its own test split, which the union leaves out)."""
    pool = copy.deepcopy(cfg["pool"])
    parts = [{"name": ds["data"]["name"], "options": ds["data"].get("options", {})}
             for ds in cfg["datasets"].values()]
    pool["data"].update(root=root, options={"datasets": parts})
    return pool, load_dataset(DataConfig(**pool["data"]), 0)


def pool_files(data: Any) -> list[str]:
    """Every photo the pool trains or validates on (the leak check's list)."""
    return [*(data.train.files or []), *((data.val.files or []) if data.val is not None else [])]


def pretrain_pool(pool: dict[str, Any], data: Any, runs: Path, reuse: bool) -> tuple[str, dict[str, Any]]:
    """The pool's autoencoder (trained once, or read back): its folder and what is known of its
    training (seconds, steps, each epoch's seconds, the pool's size)."""
    out = runs / "pool"
    config = {**pool, "seed": 0, "output_dir": str(out), "train": {**pool["train"], "progress": False}}
    _, info = common.pretrained(config, data, reuse, keep=("epochs", "steps", "val_recon", "seconds",
                                                            "train_seconds", "train_cpu_seconds", "history"))
    # each epoch's own time: a run resumed after a pause (or slowed by other jobs) shows it there
    info["epoch_seconds"] = [round(row["train_seconds"], 1) for row in info.pop("history")]
    info["images"] = len(data.train) + (len(data.val) if data.val is not None else 0)
    return str(out), info


Earlier = dict[tuple[str, str, int], dict[str, Any]]  # (dataset, run tag, seed) -> the run's record


def earlier_runs(files: list[str], cfg: dict[str, Any]) -> tuple[Earlier, list[dict[str, Any]]]:
    """The runs that earlier results files recorded under ``cfg`` (the first file that has a run
    wins; a run's list index is its seed, since seeds train in order), and each file's own record
    (its pool pretraining, wall time, runs read). A file of another config is refused."""
    done: Earlier = {}
    sources = []
    for file in files:
        try:
            old = json.loads(Path(file).read_text())
        except (OSError, ValueError) as e:
            raise SystemExit(f"--continue-from {file}: not a results file this script wrote ({e})") from None
        if not isinstance(old, dict) or old.get("config") != cfg:
            raise SystemExit(f"--continue-from {file}: its config differs from this run's "
                             "(the same --set options are needed)")
        for name, tags in old.get("runs", {}).items():
            for tag, seeds in tags.items():
                for seed, record in enumerate(seeds):
                    done.setdefault((name, tag, seed), record)
        read = sum(len(seeds) for tags in old.get("runs", {}).values() for seeds in tags.values())
        sources.append({"file": file, "runs": read, "wall_seconds": old.get("wall_seconds"),
                        "pool_pretraining": old.get("pool_pretraining")})
    return done, sources


def plan(ds: dict[str, Any]) -> list[tuple[str, int | None, str]]:
    """(tag, mask count, init) of every segmenter of a dataset: all masks, then each budget."""
    return [("all", None, init) for init in ds["all"]["inits"]] + [
        (str(b), b, init) for b in ds["budgets"] for init in ("pretrained", "scratch")]


def segment_run(cfg: dict[str, Any], name: str, data: SegSplits, seed: int, runs: Path, encoder: str,
                run: tuple[str, int | None, str], reuse: bool) -> dict[str, Any]:
    """One segmenter: its person IoU on the test split (and on validation), optimiser steps, the
    epoch kept and by what, and seconds."""
    tag, labels, init = run
    ds, seg = cfg["datasets"][name], cfg["segment"]
    sched = ds["all"] if labels is None else ds["few"]
    config = {
        "seed": seed, "output_dir": str(runs / name / f"seed{seed}" / f"{tag}-{init}"), "encoder": encoder,
        "init": init, "labels": labels,
        # scratch ignores it, and its run key too; a trial's fewer epochs freeze at most all of them
        "freeze_epochs": min(sched["freeze_epochs"], sched["epochs"]),
        "examples": 4, "data": ds["data"], **{k: v for k, v in seg.items() if k != "train"},
        "train": {**seg["train"], "epochs": sched["epochs"], "epoch_steps": sched.get("epoch_steps"),
                  "progress": False},
    }
    result = segment(config, data=data, reuse=reuse, overwrite=True)
    return {"person_iou": result.metrics["iou"]["person"], "val_person_iou": val_person_iou(result.out_dir),
            "val_person_iou_hflip": flipped_val_person_iou(result.segmenter, data.val),
            "steps": result.fit.steps, "best_epoch": result.fit.best_epoch, "monitored": result.fit.monitored,
            "seconds": result.timing.get("wall_seconds"), "cpu_seconds": result.timing.get("cpu_seconds"),
            "labelled_images": labels}


def val_person_iou(out_dir: Path) -> float | None:
    """The person IoU on the validation split of the epoch kept (what trials compare: the test
    split is never chosen on), as the run's ``metrics.json`` records it."""
    val = json.loads((out_dir / "metrics.json").read_text()).get("val")
    return val["iou"]["person"] if val else None


def flipped_val_person_iou(seg: Segmenter, val: SegSet | None, batch_size: int = 16) -> float | None:
    """The kept segmenter's person IoU on the validation split with test-time flips (``tta:
    [hflip]``), scored after training: whether the flips pay is read on validation, never on test."""
    if val is None or not len(val):
        return None
    seg.tta = ["hflip"]
    preds = torch.cat([predict_masks(seg, chunk) for chunk in val.images.split(batch_size)])
    return segmentation_metrics(preds, val.masks, val.classes)["iou"]["person"]


def segmentation_data(cfg: dict[str, Any], name: str, root: str | None, pool_files: set[str]) -> SegSplits:
    """Dataset ``name``'s splits, refused when a test photo is in the pool."""
    data = load_segmentation(DataConfig(**{**cfg["datasets"][name]["data"], "root": root}), 0)
    leaked = pool_files & set(data.test.files or [])
    if leaked:
        raise SystemExit(f"{name}: {len(leaked)} test photos are in the pool (e.g. {sorted(leaked)[0]})")
    return data


def schedule(cfg: dict[str, Any], seeds: int, only: str | None = None, datasets: list[str] | None = None
             ) -> list[tuple[int, str, tuple[str, int | None, str]]]:
    """(seed, dataset, run) in the order they train: seed by seed; in a seed, every dataset's
    few-mask runs (short, and the question the pool is for), then the all-mask ones (``only``:
    one of the two; ``datasets``: only theirs)."""
    kinds = {"few": (True,), "all": (False,), None: (True, False)}[only]
    return [(seed, name, run) for seed in range(seeds) for few in kinds
            for name, ds in cfg["datasets"].items() if datasets is None or name in datasets
            for run in plan(ds) if (run[1] is not None) == few]


def summary(key: str, runs: dict[str, list[dict[str, Any]]], inits: list[str]) -> dict[str, Any]:
    """``<key>_person_iou_<run>`` means and ``_std``; with one all-mask init, ``<key>_person_iou_all``."""
    out: dict[str, Any] = {}
    for run, seeds in runs.items():
        name = "all" if run.startswith("all_") and len(inits) == 1 else run
        cell = common.mean_std([r["person_iou"] for r in seeds])
        out[f"{key}_person_iou_{name}"], out[f"{key}_person_iou_{name}_std"] = cell["mean"], cell["std"]
    return out


def same_steps(runs: dict[str, list[dict[str, Any]]]) -> bool:
    """Pretrained and scratch took the same optimiser steps at every mask count and seed."""
    tags = {run.rsplit("_", 1)[0] for run in runs}
    return all(a["steps"] == b["steps"] for t in tags if f"{t}_pretrained" in runs and f"{t}_scratch" in runs
               for a, b in zip(runs[f"{t}_pretrained"], runs[f"{t}_scratch"], strict=False))


CLAIMS = {  # the targets: name -> (the keys it compares, the test on their means)
    "pennfudan_all_pretrained_at_least_0.75": (["pennfudan_person_iou_all_pretrained"], lambda a: a >= 0.75),
    "ccp_all_at_least_0.92": (["ccp_person_iou_all"], lambda a: a >= 0.92),
    "ccp_10_pretrained_beats_scratch_by_5_points": (
        ["ccp_person_iou_10_pretrained", "ccp_person_iou_10_scratch"], lambda p, s: p - s >= 0.05),
    "ccp_50_pretrained_beats_scratch_by_2_points": (
        ["ccp_person_iou_50_pretrained", "ccp_person_iou_50_scratch"], lambda p, s: p - s >= 0.02),
    "pennfudan_10_pretrained_beats_scratch_by_5_points": (
        ["pennfudan_person_iou_10_pretrained", "pennfudan_person_iou_10_scratch"],
        lambda p, s: p - s >= 0.05),
}


def flip_gains(runs: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, float | None]:
    """Per dataset, the mean validation person IoU that test-time flips add to a run (over every run
    scored both ways): the evidence for or against setting ``segment.tta``."""
    out: dict[str, float | None] = {}
    for name, tags in runs.items():
        gains = [r["val_person_iou_hflip"] - r["val_person_iou"] for seeds in tags.values() for r in seeds
                 if r.get("val_person_iou_hflip") is not None and r.get("val_person_iou") is not None]
        out[name] = round(sum(gains) / len(gains), 4) if gains else None
    return out


def claims(results: dict[str, Any]) -> dict[str, bool]:
    """Each target whose runs were made (a trial with other budgets judges none of theirs)."""
    return {name: test(*(results[k] for k in keys)) for name, (keys, test) in CLAIMS.items()
            if all(k in results for k in keys)}


def main() -> None:
    args = parse_args()
    cfg = configured(args.overrides)
    started = time.time()
    earlier, sources = earlier_runs(args.earlier, cfg)
    order = schedule(cfg, args.seeds, args.only, args.datasets)
    left = [(s, name, run) for s, name, run in order if (name, f"{run[0]}_{run[2]}", s) not in earlier]
    pool_cfg, pool = pool_data(cfg, args.data_root)
    if any(run[2] == "pretrained" for _, _, run in left) or not sources:
        encoder, pool_info = pretrain_pool(pool_cfg, pool, Path(args.runs), args.reuse)
    else:  # every pretrained run is read back: the pool's record is the earlier file's
        encoder, pool_info = "", next(s["pool_pretraining"] for s in sources if s["pool_pretraining"])
    trained_on = set(pool_files(pool))
    data = {name: segmentation_data(cfg, name, args.data_root, trained_on) for name in cfg["datasets"]}
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {name: {} for name in cfg["datasets"]}
    trial = args.only is not None or args.datasets is not None  # never the whole
    for done, (seed, name, run) in enumerate(order, 1):  # written after each: a killed run leaves its part
        tag = f"{run[0]}_{run[2]}"
        record = earlier.get((name, tag, seed)) or segment_run(
            cfg, name, data[name], seed, Path(args.runs), encoder, run, args.reuse)
        runs[name].setdefault(tag, []).append(record)
        results: dict[str, Any] = {}
        for each, ds in cfg["datasets"].items():
            results.update(summary(ds["key"], runs[each], ds["all"]["inits"]))
        out = {**results, "claims_met": claims(results),
               "same_steps_pretrained_and_scratch": all(same_steps(r) for r in runs.values()),
               "val_person_iou_gain_of_hflip_tta": flip_gains(runs),
               "complete": done == len(order) and not trial,
               "runs_done": f"{done} of {len(order)}",
               "seeds": list(range(args.seeds)), "pool_images": pool_info["images"],
               "pool_pretraining": pool_info,
               "runs": runs, "overrides": args.overrides, "only": args.only,
               "datasets": args.datasets,
               # the earlier files whose runs this one read back (each with its own pool pretraining)
               "continued_from": sources, "runs_trained_here": len(left),
               "command": common.command("segmentation_photos.py", data=True), "config": cfg,
               **common.provenance(started, common.SHARED)}
        common.publish(args.out, out, indent=2)


if __name__ == "__main__":
    main()
