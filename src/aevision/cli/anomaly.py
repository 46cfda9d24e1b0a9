"""``aevision anomaly``: score images by how unlike the model's (normal) training images they are."""

from __future__ import annotations

import argparse
from typing import Any

from aevision.cli.common import (
    Parser,
    add_data_arguments,
    check_flag,
    model_inputs,
    named_rows,
    output_path,
    positive,
)
from aevision.errors import AevisionError
from aevision.validation import plural


def add_parser(sub: Any) -> None:
    p: Parser = sub.add_parser(
        "anomaly", help="anomaly scores of images (reconstruction error or code density)",
        description="Score images with a model trained on normal images: 'recon' is the "
        "reconstruction error; 'gaussian', 'gmm' and 'knn' fit a density on the codes of "
        "reference (normal) images, by default the model's own training set. Images scoring "
        "above the threshold are flagged: the one --calibrate stored for the model and score, else "
        "the --quantile of the reference scores.")
    p.add_argument("model", help="model folder (from 'aevision pretrain') or model.safetensors")
    add_data_arguments(p)
    p.add_argument("--score", choices=("recon", "gaussian", "gmm", "knn"), default="recon")
    p.add_argument("--reference", metavar="DATA",
                   help="normal images: dataset name or folder (default: the model's training data)")
    p.add_argument("--reference-limit", type=int, metavar="N", help="use only N reference images")
    p.add_argument("-k", type=int, default=5, help="knn: neighbours averaged (default 5)")
    p.add_argument("--metric", choices=("l2", "cosine"), default="l2", help="knn: code distance")
    p.add_argument("--components", type=int, default=10, help="gmm: mixture components (default 10)")
    p.add_argument("--quantile", type=float, default=0.99,
                   help="without a calibrated threshold: flag images above this quantile of reference "
                   "scores (default 0.99)")
    p.add_argument("--calibrate", metavar="NORMAL", help="normal images the model never trained on (a "
                   "folder, or a dataset name: its validation split as pretrain holds it out with "
                   "--seed): set the threshold for --fpr from their scores (split conformal) and store "
                   "it beside the model (threshold.json), used from then on")
    p.add_argument("--fpr", type=float, default=0.05,
                   help="--calibrate: the false-positive rate on normal images to allow (default 0.05)")
    p.add_argument("-o", "--out", metavar="FILE.csv", help="write every image's score as CSV")
    p.add_argument("--grid", metavar="FILE.png", help="thumbnails of the most anomalous images")
    p.add_argument("--top", type=int, default=16, help="images listed and shown (default 16)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--memory", type=float, metavar="GIB",
                   help="one folder or --dataset shards:PATH whose decoded images exceed this is scored "
                   "streamed, batch by batch (default: a quarter of RAM)")
    p.add_argument("--workers", type=int, default=2, help="loader processes when streaming (default 2)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from aevision.api import load
    from aevision.tasks.anomaly_report import save_top_grid, score_images, score_stream, top_images
    from aevision.tasks.streamed_features import streamed_input

    positive(args, "-k", "--components", "--top", "--reference-limit")
    check_flag(args, "--quantile", lambda q: 0.0 < q < 1.0, "a fraction in (0, 1)")
    out = output_path(args.out, (".csv",)) if args.out else None
    grid = output_path(args.grid, (".png",), "--grid") if args.grid else None
    check_flag(args, "--fpr", lambda q: 0.0 < q < 1.0, "a fraction in (0, 1)")
    model = load(args.model, args.device)
    score = dict(score=args.score, reference=args.reference, reference_limit=args.reference_limit,
                 data_root=args.data_root, seed=args.seed, k=args.k, metric=args.metric,
                 components=args.components)
    if args.calibrate:
        _calibrate(args, model, score)
        if not (args.inputs or args.dataset):
            return 0
    options = dict(score, quantile=args.quantile, batch_size=args.batch_size, device=args.device)
    stream = None if args.limit is not None else streamed_input(
        args.dataset, args.inputs, args.split, tuple(model.input_shape), args.memory, args.resize)
    if stream is not None:
        result = score_stream(model, args.model, stream, workers=args.workers, **options)
        data = None
    else:
        data = named_rows(model_inputs(args, model))
        result = score_images(model, args.model, data, **options)
    _print(args, result, len(result.scores))
    if out is not None:
        from aevision.io import write_csv_rows

        write_csv_rows(out, result.rows())
        print(f"wrote {out}")
    if grid is not None:
        save_top_grid(grid, data if data is not None else top_images(result, model, args.top), result,
                      args.top if data is not None else None)
        print(f"wrote {grid}")
    return 0


def _calibrate(args: argparse.Namespace, model: Any, score: dict[str, Any]) -> None:
    from aevision.data.inputs import dataset_inputs
    from aevision.data.sources import SourceSpec, is_path, load_source, resolved
    from aevision.models.io import pretraining_carve
    from aevision.tasks.anomaly_report import calibrate

    c, h, w = model.input_shape
    if is_path(args.calibrate):
        normal = load_source(SourceSpec(resolved(args.calibrate)), c, (h, w))
    else:  # a dataset's validation split as the model's pretraining held it out: its training
        # images would include the very ones the model learned to reconstruct (scores too low)
        carve = pretraining_carve(args.model, args.calibrate)
        if carve is not None and carve[0] == 0:
            raise AevisionError(f"--calibrate {args.calibrate}: the model was pretrained on all its "
                                f"training images (data.val_fraction 0); calibrate on images it never saw")
        normal = dataset_inputs(args.calibrate, "val", c, (h, w), root=args.data_root, seed=args.seed,
                                carve=carve).data
    found = calibrate(model, args.model, normal, fpr=args.fpr, source=args.calibrate,
                      batch_size=args.batch_size, device=args.device, **score)
    print(f"calibrated {args.score} threshold {found.threshold:.6g} for false-positive rate {args.fpr:g}: "
          f"score rank {found.rank} of {plural(found.calibration_images, 'normal image')}; "
          f"stored with the model")


def _print(args: argparse.Namespace, result: Any, n: int) -> None:
    if result.note:
        print(f"note: {result.note}")
    ref = "none" if result.reference_size is None else \
        f"{result.reference}, {plural(result.reference_size, 'image')}"
    needed = result.reference_size is not None or result.threshold is None  # a calibrated recon: no
    print(f"scored {plural(n, 'image')} with {args.score}" + (f"; reference: {ref}" if needed else ""))
    if result.threshold is not None:
        print(f"threshold ({result.rule}): {result.threshold:.6g}; flagged {result.flagged} of {n} "
              f"as anomalous")
    print(f"most anomalous ({min(args.top, n)}):")
    for i in result.order[: args.top].tolist():
        label = f"  label {int(result.labels[i])}" if result.labels is not None else ""
        verdict = "" if result.threshold is None else \
            ("  anomalous" if result.scores[i] > result.threshold else "  normal")
        print(f"  {result.scores[i]:.6g}  {result.names[i]}{verdict}{label}")
