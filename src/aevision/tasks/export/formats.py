"""Writing a :class:`~aevision.tasks.export.graphs.Graph` to a file, and running that file back.

ONNX goes through ``torch.onnx.export(..., dynamo=True)``: it traces with ``torch.export``, whose
dynamic dimensions (``torch.export.Dim``) are checked against the graph, so a model that would
silently bake in its batch or image size fails to export instead of exporting wrong; the legacy
TorchScript-based exporter only renames axes (``dynamic_axes``) and is deprecated. The file is
run back with onnxruntime (CPU). TorchScript is ``torch.jit.trace`` and ``torch.jit.load``.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from aevision.errors import AevisionError
from aevision.tasks.export.graphs import Graph

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
Runner = Callable[[Tensor], list[np.ndarray]]  # the one input -> every output
MAX_SIDE = 1 << 14  # the largest dynamic dimension an exported graph accepts


def dynamic_shapes(graph: Graph, example: Tensor) -> tuple[dict[int, object], ...]:
    """The one input's dynamic axes: the batch, and the last two when the size is dynamic."""
    from torch.export import Dim

    axes: dict[int, object] = {0: Dim("batch", min=1, max=MAX_SIDE)}
    if graph.dynamic_size and example.dim() == 4:
        axes[2] = Dim("height", min=1, max=MAX_SIDE)
        axes[3] = Dim("width", min=1, max=MAX_SIDE)
    return (axes,)


def write_graph(graph: Graph, example: Tensor, path: Path, fmt: str) -> None:
    """Export ``graph`` traced on ``example`` (its input, batch >= 2) to ``path``."""
    with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            if fmt == "onnx":
                torch.onnx.export(graph.module, (example,), str(path), input_names=graph.inputs,
                                  output_names=graph.outputs, dynamic_shapes=dynamic_shapes(graph, example),
                                  dynamo=True, external_data=False, verbose=False)
            else:
                torch.jit.trace(graph.module, (example,), check_trace=False).save(str(path))
        except Exception as e:  # the exporters raise many types; the user gets one line
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise AevisionError(f"{graph.name}: {fmt} export failed ({type(e).__name__}: {first})") from e


def load_runner(path: Path, fmt: str) -> Runner:
    """The exported file as a function: input tensor -> its outputs as float arrays."""
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: [np.asarray(o) for o in session.run(None, {name: x.detach().cpu().numpy()})]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(str(path), map_location="cpu").eval()

    def run(x: Tensor) -> list[np.ndarray]:
        with torch.no_grad():
            out = module(x.detach().cpu())
        return [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]

    return run


def onnx_opset(path: Path) -> int:
    """The default-domain opset an ONNX file was written for."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next(int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx"))
