"""Does the exported file compute what the PyTorch model computes, on real images?

:func:`graph_parity` feeds a graph's inputs, made from real images (at the model's size and, for
a graph with a dynamic size, at a second size too), to the PyTorch module and to the exported
file: ``max_abs_diff`` is the largest absolute difference of any output, ``max_rel_diff`` that
difference over the largest magnitude of the reference output (so a code in the hundreds is not
held to the absolute tolerance of an image in [0, 1]).

:func:`codec_parity`: a codec's exported analysis must give exactly the integers PyTorch gives,
and a file compressed through it (aevision's entropy coding on the exported transform's latents)
must decompress with aevision to the very images the PyTorch codec's own file gives.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from aevision.data.imageset import to_float
from aevision.errors import AevisionError
from aevision.models.base import Autoencoder
from aevision.tasks.compress import Codec
from aevision.tasks.export.formats import Runner
from aevision.tasks.export.graphs import Graph, latent


def differences(ref: list[Tensor], got: list[np.ndarray], name: str = "exported graph"
                ) -> tuple[float, float]:
    """(max abs difference, that over the largest reference magnitude) over every output."""
    if len(ref) != len(got):
        raise AevisionError(f"{name}: the exported file has {len(got)} outputs, the model {len(ref)}")
    worst, scale = 0.0, 0.0
    for r, g in zip(ref, got, strict=True):
        r = r.detach().cpu().double()
        if tuple(r.shape) != tuple(g.shape):
            raise AevisionError(f"{name}: the exported file's output has shape {tuple(g.shape)}, "
                                f"the model's {tuple(r.shape)}")
        worst = max(worst, float((r - torch.from_numpy(np.asarray(g)).double()).abs().max()))
        scale = max(scale, float(r.abs().max()))
    return worst, worst / max(scale, 1e-12)


def as_list(out: Tensor | tuple[Tensor, ...]) -> list[Tensor]:
    return list(out) if isinstance(out, tuple) else [out]


@torch.no_grad()
def graph_parity(graph: Graph, runner: Runner, image_sets: list[Tensor]) -> dict[str, Any]:
    """Parity of one graph on each of ``image_sets`` ((N, C, H, W) floats in [0, 1]), plus the
    shapes and value ranges it saw: {max_abs_diff, max_rel_diff, inputs, input_range, outputs}."""
    worst_abs, worst_rel, shapes, outputs, low, high = 0.0, 0.0, [], [], float("inf"), -float("inf")
    for images in image_sets:
        x = graph.feed(images)[graph.inputs[0]]
        ref = as_list(graph.module(x))
        abs_diff, rel_diff = differences(ref, run_checked(graph, runner, x), graph.name)
        worst_abs, worst_rel = max(worst_abs, abs_diff), max(worst_rel, rel_diff)
        shapes.append(list(x.shape))
        outputs.append([(list(r.shape), float(r.min()), float(r.max())) for r in ref])
        low, high = min(low, float(x.min())), max(high, float(x.max()))
    return {"max_abs_diff": worst_abs, "max_rel_diff": worst_rel,
            "inputs": {"count": shapes[0][0], "shapes": shapes},
            "input_range": (low, high), "outputs": outputs}


def run_checked(graph: Graph, runner: Runner, x: Tensor) -> list[np.ndarray]:
    """The exported file's outputs for ``x``; a file that cannot take it is a one-line error."""
    try:
        return runner(x)
    except Exception as e:  # onnxruntime and TorchScript raise their own types
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise AevisionError(f"{graph.name}: the exported file fails on an input of shape "
                            f"{tuple(x.shape)} ({first[:200]})") from e


class ExportedAnalysis(Codec):
    """aevision's codec with the analysis transform replaced by the exported file."""

    def __init__(self, model: Autoencoder, analysis: Runner):
        super().__init__(model)
        self.exported = analysis

    def analysis(self, model: Autoencoder, x: Tensor) -> Tensor:
        # the one step Codec.compress_latents takes from the network; the coding stays aevision's
        return torch.from_numpy(self.exported(x)[0]).to(x.device)


@torch.no_grad()
def codec_parity(model: Autoencoder, runners: dict[str, Runner], images: Tensor) -> dict[str, Any]:
    """``images`` (N, C, H, W) uint8 through the PyTorch codec and through the exported analysis
    (and hyper-analysis): identical integers, and cross decompression."""
    x = to_float(images)
    reference = Codec(model)
    mine = reference.compress_latents(list(images))
    theirs = ExportedAnalysis(model, runners["analysis"]).compress_latents(list(images))
    same = all(torch.equal(a, b) for a, b in zip(mine.latents, theirs.latents, strict=True))
    same = same and torch.equal(torch.round(latent(model, x)),
                                torch.round(torch.from_numpy(runners["analysis"](x)[0])))
    if "hyper_analysis" in runners:
        entropy = reference.entropy
        y = latent(model, x)
        hyper_in = y if getattr(entropy, "means", False) else torch.round(y).abs()
        same = same and torch.equal(torch.round(entropy.h_a(hyper_in)),  # type: ignore[operator]
                                    torch.round(torch.from_numpy(runners["hyper_analysis"](hyper_in)[0])))
    try:
        decoded = reference.decompress(theirs.data)
        cross_ok, error = all(torch.equal(a, b) for a, b in zip(
            decoded, reference.decompress(mine.data), strict=True)), None
    except AevisionError as e:
        cross_ok, error = False, str(e)
    return {"latents_identical": bool(same), "cross_decompress_ok": bool(cross_ok),
            "file_identical": mine.data == theirs.data, "images": len(images),
            "latents": sum(q.numel() for q in mine.latents),
            "nonzero_latents": sum(int((q != 0).sum()) for q in mine.latents),
            "file_bytes": len(theirs.data), **({"error": error} if error else {})}
