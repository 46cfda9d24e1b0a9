"""What ``export.json`` says beside the exported files: for every graph its file, its inputs and
outputs (names, shapes with their dynamic axes named, dtypes, value ranges) and its parity; for
the whole export the model it came from (the SHA-256 of its weights; a codec's hash, the one its
compressed files carry), the exporter and the images the parity was checked on."""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from aevision.models.base import Autoencoder
from aevision.tasks.export.graphs import Graph

EXPORTERS = {"onnx": "torch.onnx.export(dynamo=True), checked with onnxruntime (CPU)",
             "torchscript": "torch.jit.trace, checked with torch.jit.load"}


def input_shape(graph: Graph, shape: list[int]) -> list[int | str]:
    """The input's shape with its dynamic axes named."""
    named: list[int | str] = ["batch", *shape[1:]]
    if graph.dynamic_size and len(shape) == 4:
        named[2:] = ["height", "width"]
    return named


def output_shapes(parity: dict[str, Any]) -> list[list[int | str]]:
    """Each output's shape, the batch axis named and the axes that changed with the input's size
    marked ``dynamic``."""
    runs = parity["outputs"]
    shapes = []
    for k, (shape, _, _) in enumerate(runs[0]):
        others = [run[k][0] for run in runs[1:]]
        shapes.append(["batch", *("dynamic" if any(o[i] != n for o in others) else n
                                  for i, n in enumerate(shape) if i > 0)])
    return shapes


def graph_entry(graph: Graph, file: str, parity: dict[str, Any]) -> dict[str, Any]:
    """One graph's part of export.json."""
    def ranged(name: str, observed: tuple[float, float]) -> dict[str, Any]:
        declared = graph.ranges.get(name)
        return {"dtype": "float32", "range": list(declared or observed),
                "range_source": "declared" if declared else "observed on the parity inputs"}

    observed = [(min(run[k][1] for run in parity["outputs"]), max(run[k][2] for run in parity["outputs"]))
                for k in range(len(graph.outputs))]
    return {
        "name": graph.name, "file": file,
        "inputs": [{"name": graph.inputs[0], "shape": input_shape(graph, parity["inputs"]["shapes"][0]),
                    **ranged(graph.inputs[0], parity["input_range"])}],
        "outputs": [{"name": n, "shape": s, **ranged(n, r)}
                    for n, s, r in zip(graph.outputs, output_shapes(parity), observed, strict=True)],
        "dynamic_batch": True, "dynamic_size": graph.dynamic_size,
        **({"size_multiple": graph.size_multiple} if graph.dynamic_size else {}),
        "parity": {k: parity[k] for k in ("max_abs_diff", "max_rel_diff", "inputs")},
        **({"note": graph.note} if graph.note else {}),
    }


def describe(path: str | os.PathLike[str], model: nn.Module, kind: str, fmt: str,
             entries: list[dict[str, Any]], codec: dict[str, Any] | None, source: str,
             tolerance: float) -> dict[str, Any]:
    """The whole of export.json."""
    import torch

    from aevision.engine.run import weights_sha256
    from aevision.provenance import __version__

    spec = getattr(model, "spec", {})
    arch = spec.get("name") if isinstance(model, Autoencoder) else spec.get("encoder", {}).get("name")
    record: dict[str, Any] = {
        "format": fmt, "kind": kind, "architecture": arch, "source": str(path),
        "model_sha256": weights_sha256(path), "input_shape": list(model.input_shape),  # type: ignore[arg-type]
        "graphs": entries,
        "parity": {"ok": True, "tolerance": tolerance, "inputs": source,
                   "max_abs_diff": max(e["parity"]["max_abs_diff"] for e in entries),
                   "max_rel_diff": max(e["parity"]["max_rel_diff"] for e in entries),
                   **({"codec": codec} if codec is not None else {})},
        "exporter": EXPORTERS[fmt], "aevision_version": __version__, "torch_version": torch.__version__,
    }
    if kind == "codec":
        from aevision.tasks.compress import model_hash

        record["codec_hash"] = model_hash(model).hex()  # type: ignore[arg-type]
    if fmt == "onnx":
        import onnxruntime

        record["onnxruntime_version"] = onnxruntime.__version__
    return record
