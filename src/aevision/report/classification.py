"""Classification figures: confusion matrices and accuracy against the number of labels."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from aevision.report.plots import _figure_to_png, _pyplot


def confusion_matrix_png(path: str | os.PathLike[str], matrix: Sequence[Sequence[int]],
                         classes: Sequence[str], title: str = "") -> None:
    """Row-normalised heatmap (each true class sums to 1), with the counts written in the cells."""
    plt = _pyplot()
    m = np.asarray(matrix, dtype=np.float64)
    rows = m.sum(1, keepdims=True)
    norm = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    k = len(classes)
    size = max(4.0, 0.45 * k + 1.5)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    if k <= 20:
        for i in range(k):
            for j in range(k):
                if m[i, j]:
                    ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center", fontsize=6,
                            color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xticklabels(classes, rotation=90, fontsize=7)
    ax.set_yticklabels(classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of the true class")
    _figure_to_png(fig, path)


def accuracy_vs_labels(path: str | os.PathLike[str],
                       curves: Mapping[str, Sequence[tuple[float, float, float]]],
                       title: str, ylabel: str = "test accuracy",
                       ticks: Mapping[float, str] | None = None) -> None:
    """One line per method: points (labels per class, mean, std), log x axis, std as error bars.

    Baselines (names starting with ``pixels``, ``pca`` or ``scratch``) are dashed so the
    autoencoders stand out. ``ticks`` names the x positions of the label budgets (``{120.3:
    "all"}``: every label sits at its number per class, and its tick says "all").
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, points) in enumerate(curves.items()):
        if not points:
            continue
        pts = sorted(points)
        xs, ys, es = (np.array(v) for v in zip(*pts, strict=True))
        baseline = name.split(":")[0] in ("pixels", "scratch") or name.startswith("pca")
        ax.errorbar(xs, ys, yerr=es, fmt="--o" if baseline else "-o", ms=4, capsize=3,
                    color=colours[i % len(colours)], label=name, alpha=0.8 if baseline else 1.0)
    ax.set_xscale("log")
    if ticks:
        ax.set_xticks(sorted(ticks), [ticks[x] if ticks[x] != "all" else f"all\n(~{x:.0f})"
                                      for x in sorted(ticks)])
        ax.minorticks_off()
    ax.set_xlabel("labelled training images per class")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2)
    _figure_to_png(fig, path)
