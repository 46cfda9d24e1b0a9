"""Claim (issue #39): every exported model computes what PyTorch computes, on real images.

Tiny models are pretrained for a couple of epochs through the API (``dense``, ``conv`` and ``unet``
on sklearn's digits; ``mae``, when that architecture is registered, and a ``codec`` with a scale
hyperprior on generated 32x32 shapes; a ``segmenter``: a U-Net around a ``conv`` encoder
pretrained on shapes-seg), then exported with ``aevision.api.export_model`` (ONNX through
``torch.onnx.export(dynamo=True)``, run back with onnxruntime). Each export checks its files on
the held-out images of the run's own data: ``parity[name]`` has the largest absolute and relative
difference over all its graphs (outputs of images in [0, 1]), the images used, and per graph the
same with the shapes checked (two sizes for a graph with a dynamic size); the codec's entry says
whether its integer latents were identical and whether a file compressed through the exported
analysis decompressed with aevision to the same images.

    python bench/export.py                    # a few minutes on 2 shared cores
    python bench/export.py --format torchscript --out /tmp/export_ts.json
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import common
from aevision.api import export_model
from aevision.models import MODELS
from aevision.tasks.segmentation import segment

DIGITS = {"name": "digits", "limit": 400}
SHAPES = {"name": "shapes", "options": {"n_train": 320, "n_test": 40, "size": 32}}
SHAPES_SEG = {"name": "shapes-seg", "options": {"n_train": 160, "n_test": 24, "size": 32}}
# name -> (model, regularizers, data); each trained for EPOCHS
AUTOENCODERS: dict[str, tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]] = {
    "dense": ({"name": "dense", "code_dim": 32}, [], DIGITS),
    "conv": ({"name": "conv", "channels": [16, 32], "code_dim": 32}, [], DIGITS),
    "unet": ({"name": "unet", "channels": [16, 32]}, [], DIGITS),
    "mae": ({"name": "mae", "width": 64, "depth": 2, "heads": 2, "decoder_width": 32, "decoder_depth": 1,
             "decoder_heads": 2}, [], SHAPES),
    "codec": ({"name": "codec", "channels": 32, "code_channels": 16, "stages": 2, "code_gain": 8.0},
              [{"name": "hyperprior", "channels": 16, "weight": 0.01}], SHAPES),
}
EPOCHS = 2


def train_config(runs: Path, name: str, model: dict[str, Any], regs: list[dict[str, Any]],
                 data: dict[str, Any]) -> dict[str, Any]:
    return {"seed": 0, "output_dir": str(runs / name), "data": data, "model": model, "regularizers": regs,
            "train": {"epochs": EPOCHS, "batch_size": 32, "progress": False}}


def summary(manifest: dict[str, Any], seconds: float) -> dict[str, Any]:
    """One ``parity`` entry: the worst differences, the images, and each graph's own numbers."""
    parity = manifest["parity"]
    graphs = {g["name"]: {"file": g["file"], **g["parity"], "dynamic_size": g["dynamic_size"]}
              for g in manifest["graphs"]}
    return {"max_abs_diff": parity["max_abs_diff"], "max_rel_diff": parity["max_rel_diff"],
            "inputs": {"images": parity["inputs"],
                       "count": manifest["graphs"][0]["parity"]["inputs"]["count"]},
            **({k: parity["codec"][k] for k in ("latents_identical", "cross_decompress_ok", "file_identical",
                                                "latents", "nonzero_latents")} if "codec" in parity else {}),
            "graphs": graphs, "export_seconds": round(seconds, 1)}


def export_one(run: Path, out: Path, fmt: str) -> dict[str, Any]:
    started = time.time()
    result = export_model(run, out, fmt=fmt)
    return summary(result.manifest, time.time() - started)


def export_autoencoders(runs: Path, fmt: str, reuse: bool) -> dict[str, Any]:
    parity: dict[str, Any] = {}
    for name, (model, regs, data) in AUTOENCODERS.items():
        if model["name"] not in MODELS:
            parity[name] = {"absent": f"no {model['name']!r} architecture is registered in this aevision"}
            continue
        common.pretrained(train_config(runs, name, model, regs, data), None, reuse, ())
        parity[name] = export_one(runs / name, runs / f"{name}-{fmt}", fmt)
    return parity


def export_segmenter(runs: Path, fmt: str, reuse: bool) -> dict[str, Any]:
    """A U-Net around a conv encoder pretrained on the same images (no masks), then trained on masks."""
    encoder = train_config(runs, "segmenter-encoder", {"name": "conv", "channels": [16, 32]}, [], SHAPES_SEG)
    common.pretrained(encoder, None, reuse, ())
    segment({"encoder": encoder["output_dir"], "data": SHAPES_SEG, "output_dir": str(runs / "segmenter"),
             "examples": 1, "train": {"epochs": EPOCHS, "batch_size": 16, "progress": False}},
            reuse=reuse, overwrite=True)
    return export_one(runs / "segmenter", runs / f"segmenter-{fmt}", fmt)


def main() -> None:
    p = common.parser(__doc__, "export.json", runs="runs/bench-export")
    p.add_argument("--format", choices=("onnx", "torchscript"), default="onnx")
    args = p.parse_args()
    started = time.time()
    runs = Path(args.runs)
    parity = export_autoencoders(runs, args.format, args.reuse)
    parity["segmenter"] = export_segmenter(runs, args.format, args.reuse)
    checked = [v for v in parity.values() if "max_abs_diff" in v]
    result = {"format": args.format, "parity": parity, "epochs": EPOCHS,
              "max_abs_diff": max(v["max_abs_diff"] for v in checked),
              "all_within_1e-4": all(v["max_abs_diff"] <= 1e-4 for v in checked),
              "command": common.command("export.py"), **common.provenance(started)}
    common.publish(args.out, result, indent=1)


if __name__ == "__main__":
    main()
