"""``aevision export``: a trained run -> ONNX or TorchScript files, checked, and a JSON beside them.

    result = export_model("runs/codec", "exported/", fmt="onnx")
    result.manifest["graphs"][0]["parity"]["max_abs_diff"]

Every graph of the run (:mod:`aevision.tasks.export.graphs`) is exported into a staging folder
beside ``out``, run back (onnxruntime or ``torch.jit.load``) on real images (``inputs``, or the
held-out images of the data the run was trained on) and compared with PyTorch
(:mod:`aevision.tasks.export.parity`); a codec must also reproduce its integers and cross
decompress. Only when every check passes are the files and ``export.json`` moved into ``out``:
a failed export is an error and leaves nothing there.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from aevision.data.imageset import to_float
from aevision.errors import AevisionError, ConfigError
from aevision.io import staged_folder, write_json
from aevision.tasks.export.formats import FORMATS, Runner, load_runner, onnx_opset, write_graph
from aevision.tasks.export.graphs import Graph, model_graphs
from aevision.tasks.export.manifest import describe, graph_entry
from aevision.tasks.export.parity import codec_parity, graph_parity
from aevision.tasks.export.sources import load_exportable, real_images

MANIFEST = "export.json"


@dataclass
class ExportResult:
    """The folder written, its files (``export.json`` last) and what ``export.json`` holds."""

    out: Path
    files: list[Path]
    manifest: dict[str, Any]


def export_model(path: str | os.PathLike[str], out: str | os.PathLike[str], *, fmt: str = "onnx",
                 inputs: Sequence[str] | None = None, limit: int = 16, tolerance: float = 1e-4,
                 fit: str | None = None, data_root: str | None = None) -> ExportResult:
    """Export the model or segmenter saved in ``path`` into ``out`` (see the module docstring).

    ``tolerance``: a graph fails parity when its max abs difference exceeds it and its max
    relative difference does too (outputs in [0, 1] are held to the absolute bound).
    """
    if fmt not in FORMATS:
        raise ConfigError("--format", fmt, " or ".join(FORMATS))
    if limit < 1 or not tolerance > 0:
        raise ConfigError("--limit" if limit < 1 else "--tolerance", limit if limit < 1 else tolerance,
                          "a positive number")
    model, kind = load_exportable(path)
    images, source = real_images(path, model, inputs, limit, fit, data_root)
    graphs = model_graphs(model)
    with staging(Path(out)) as tmp:
        entries, runners = [], {}
        for graph in graphs:
            entry, runners[graph.name] = export_graph(graph, images, tmp, fmt, tolerance)
            entries.append(entry)
        codec = codec_parity(model, runners, images) if kind == "codec" else None  # type: ignore[arg-type]
        if codec is not None and not (codec["latents_identical"] and codec["cross_decompress_ok"]):
            raise AevisionError(f"{path}: the exported codec fails parity (latents identical: "
                                f"{codec['latents_identical']}, "
                                f"cross decompression: {codec['cross_decompress_ok']})")
        manifest = describe(path, model, kind, fmt, entries, codec, source, tolerance)
        write_json(tmp / MANIFEST, manifest)
        files = [*(Path(out) / e["file"] for e in entries), Path(out) / MANIFEST]
    return ExportResult(Path(out), files, manifest)


@contextmanager
def staging(out: Path) -> Iterator[Path]:
    """:func:`aevision.io.staged_folder` with the manifest moved in last; then an earlier export's
    graphs that the new one lacks are removed (a user's own files stay)."""
    earlier = exported_files(out)
    with staged_folder(out, last=MANIFEST) as tmp:
        yield tmp
    for name in earlier - exported_files(out):
        (out / name).unlink(missing_ok=True)


def exported_files(folder: Path) -> set[str]:
    """The graph files an ``export.json`` in ``folder`` lists (none when there is none or it is
    unreadable)."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        graphs = manifest.get("graphs", [])
        return {Path(g["file"]).name for g in graphs if isinstance(g, dict) and g.get("file")}
    except (OSError, ValueError, AttributeError, TypeError):
        return set()


# how much larger the second parity size is: enough that an output downsampled by up to 64 (a codec
# of 6 stages) changes size too; 8 left a 5-stage codec's latent of an 8x8 input at 1x1 both times,
# and export.json declared that size fixed
SECOND_SIZE_STEP = 64


def second_size(images: Tensor, multiple: int) -> Tensor:
    """``images`` resized to a larger size that is still a multiple of ``multiple``: the second
    size a graph with a dynamic size is checked at (the output axes that change are declared dynamic)."""
    step = multiple * -(-SECOND_SIZE_STEP // multiple)
    h, w = images.shape[-2:]
    return F.interpolate(images, size=(h + step, w + step), mode="bilinear", align_corners=False).clamp(0, 1)


def export_graph(graph: Graph, images: Tensor, folder: Path, fmt: str,
                 tolerance: float) -> tuple[dict[str, Any], Runner]:
    """Export one graph, run it back, check its parity: (its export.json entry, its runner)."""
    x = to_float(images)
    example = graph.feed(x[: max(2, min(len(x), 4))])[graph.inputs[0]]
    if example.shape[0] < 2:  # torch.export takes a batch of 1 for a constant
        example = example.expand(2, *example.shape[1:]).contiguous()
    path = folder / f"{graph.name}{FORMATS[fmt]}"
    try:
        write_graph(graph, example, path, fmt)
    except AevisionError:
        if not graph.dynamic_size:
            raise
        # an architecture whose weights fit any size may still compute with a fixed one
        graph = dataclasses.replace(graph, dynamic_size=False)
        write_graph(graph, example, path, fmt)
    runner = load_runner(path, fmt)
    sets = [x, second_size(x, graph.size_multiple)] if graph.dynamic_size else [x]
    parity = graph_parity(graph, runner, sets)
    if parity["max_abs_diff"] > tolerance and parity["max_rel_diff"] > tolerance:
        raise AevisionError(f"{graph.name}: exported {fmt} output differs from PyTorch by "
                            f"{parity['max_abs_diff']:.3g} (relative {parity['max_rel_diff']:.3g}), "
                            f"over the tolerance {tolerance:g}")
    entry = graph_entry(graph, path.name, parity)
    return ({**entry, "opset": onnx_opset(path)} if fmt == "onnx" else entry), runner
