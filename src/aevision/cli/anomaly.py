"""``aevision anomaly``: score images by how unlike the model's (normal) training images they are."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from aevision.cli.common import Parser, add_data_arguments, load_inputs, output_path, positive
from aevision.errors import AevisionError


def add_parser(sub: Any) -> None:
    p: Parser = sub.add_parser(
        "anomaly", help="anomaly scores of images (reconstruction error or code density)",
        description="Score images with a model trained on normal images: 'recon' is the "
        "reconstruction error; 'gaussian', 'gmm' and 'knn' fit a density on the codes of "
        "reference (normal) images, by default the model's own training set. Images scoring "
        "above the --quantile of the reference scores are flagged.")
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
                   help="flag images above this quantile of reference scores (default 0.99)")
    p.add_argument("-o", "--out", metavar="FILE.csv", help="write every image's score as CSV")
    p.add_argument("--grid", metavar="FILE.png", help="thumbnails of the most anomalous images")
    p.add_argument("--top", type=int, default=16, help="images listed and shown (default 16)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(run=run)


def load_reference(args: argparse.Namespace, model: Any) -> tuple[Any, str] | None:
    """The normal images and their name: --reference, or exactly the training images the model
    was pretrained on (its config.json: dataset, options, limit, seed; validation held out)."""
    from aevision.config import DataConfig, from_dict
    from aevision.data import load_dataset
    from aevision.data.sources import SourceSpec, is_path, load_source
    from aevision.io import read_json

    c, h, w = model.input_shape
    if args.reference:
        data = str(Path(args.reference).expanduser().resolve()) if is_path(args.reference) \
            else args.reference
        spec = SourceSpec(data, "train", args.data_root, args.seed, args.reference_limit)
        return load_source(spec, c, (h, w)), args.reference
    folder = Path(args.model)
    folder = folder.parent if folder.suffix == ".safetensors" else folder
    config = read_json(folder / "config.json", "model config")
    run = config.get("config") if isinstance(config, dict) else None
    if not isinstance(run, dict) or not isinstance(run.get("data"), dict):
        return None
    cfg = from_dict(DataConfig, run["data"], "data")
    cfg.root = args.data_root or cfg.root
    cfg.channels, cfg.image_size = c, [h, w]
    reference = load_dataset(cfg, int(run.get("seed", 0))).train
    if args.reference_limit is not None and args.reference_limit < len(reference):
        reference = reference.subset(range(args.reference_limit))
    return reference, f"{cfg.name} (the model's training set)"


def run(args: argparse.Namespace) -> int:
    from aevision.api import encode, load
    from aevision.tasks.anomaly import CodeDensity, reconstruction_error

    positive("-k", args.k)
    positive("--components", args.components)
    positive("--top", args.top)
    if not 0.0 < args.quantile < 1.0:
        raise AevisionError(f"--quantile: got {args.quantile}, expected a fraction in (0, 1)")
    out = output_path(args.out, (".csv",)) if args.out else None
    grid = output_path(args.grid, (".png",), "--grid") if args.grid else None
    model = load(args.model, args.device)
    data = load_inputs(args, model)
    if args.reference_limit is not None:
        positive("--reference-limit", args.reference_limit)
    try:
        found = load_reference(args, model)
    except AevisionError as e:
        if args.reference or args.score != "recon":
            raise
        # reconstruction error needs no reference; only the threshold is lost
        print(f"note: no reference images, so no threshold ({e})")
        found = None
    if found is None and args.score != "recon":
        raise AevisionError(f"--score {args.score}: needs --reference DATA (normal images); the "
                            f"model's config does not say what it was trained on")
    reference, ref_name = found if found is not None else (None, "none")

    if args.score == "recon":
        scores = reconstruction_error(model, data, args.batch_size)
        ref_scores = (reconstruction_error(model, reference, args.batch_size)
                      if reference is not None else None)
    else:
        assert reference is not None
        density = CodeDensity(args.score, k=args.k, metric=args.metric, components=args.components,
                              seed=args.seed)
        ref_codes = encode(model, reference, args.batch_size, args.device)
        density.fit(ref_codes)
        scores = density.score(encode(model, data, args.batch_size, args.device))
        ref_scores = density.score(ref_codes, exclude_self=True)
    threshold = float(ref_scores.quantile(args.quantile)) if ref_scores is not None else None

    names = data.files or [str(i) for i in range(len(data))]
    order = scores.argsort(descending=True)
    flagged = int((scores > threshold).sum()) if threshold is not None else None
    ref = f"{ref_name}, {len(reference)} images" if reference is not None else "none"
    print(f"scored {len(data)} images with {args.score}; reference: {ref}")
    if threshold is not None:
        print(f"threshold (reference {args.quantile:g} quantile): {threshold:.6g}; "
              f"flagged {flagged} of {len(data)}")
    print(f"most anomalous ({min(args.top, len(data))}):")
    for i in order[: args.top].tolist():
        label = f"  label {int(data.labels[i])}" if data.labels is not None else ""
        print(f"  {scores[i]:.6g}  {names[i]}{label}")
    if out is not None:
        from aevision.io import write_csv_rows

        rows = []
        for i in range(len(data)):
            row: dict[str, Any] = {"image": names[i], "score": float(scores[i])}
            if threshold is not None:
                row["anomalous"] = int(scores[i] > threshold)
            if data.labels is not None:
                row["label"] = int(data.labels[i])
            rows.append(row)
        write_csv_rows(out, rows)
        print(f"wrote {out}")
    if grid is not None:
        from aevision.report.plots import image_grid, save_image

        top = data.floats(order[: args.top])
        save_image(grid, image_grid(list(top.split(8)), scale=max(1, 64 // model.input_shape[1])))
        print(f"wrote {grid}")
    return 0
