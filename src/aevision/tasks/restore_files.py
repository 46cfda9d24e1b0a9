"""Restoring image files with a denoising autoencoder: what ``aevision restore`` runs.

:func:`restore_files` denoises or inpaints every image (the holes of an inpainting input are its
transparent pixels) and writes the restored PNGs and a before/after grid; with a simulated
:class:`~aevision.tasks.restore.Degradation` the inputs are clean images that are degraded first
(seeded), and PSNR/SSIM before and after go to ``metrics.json``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from aevision.data.images import BadImage, load_image, open_image, to_hwc
from aevision.data.imageset import to_float, to_uint8
from aevision.errors import AevisionError
from aevision.io import refuse_existing, staged_folder, write_json
from aevision.models.base import Autoencoder
from aevision.provenance import machine_info
from aevision.tasks.quality import psnr, ssim
from aevision.tasks.restore import Degradation, Task, restore, training_note


@dataclass
class Restored:
    """What :func:`restore_files` did: ``metrics`` per image and their ``mean`` (simulated
    degradations only; empty otherwise) and the grid it wrote."""

    count: int
    grid: Path
    metrics: list[dict[str, Any]] = field(default_factory=list)
    mean: dict[str, float] = field(default_factory=dict)
    note: str | None = None  # the model was not trained for the task (see training_note)

    @property
    def lowered(self) -> list[str]:
        """The measures (``psnr``, ``ssim``) whose mean is lower after restoring than before: the
        model made these images worse by that measure."""
        m = self.mean
        return [k for k in ("psnr", "ssim")
                if f"{k}_restored" in m and m[f"{k}_restored"] < m[f"{k}_degraded"]]


def restore_files(model: Autoencoder, paths: list[Path], out: str | os.PathLike[str], *, task: Task,
                  degradation: Degradation | None = None, seed: int = 0, shown: int = 8,
                  command: str | None = None, model_path: str | None = None,
                  overwrite: bool = False) -> Restored:
    """Write ``out/<stem>.png`` for every image and ``out/grid.png`` (the first ``shown``: degraded /
    restored / clean with a degradation, input / restored without); with a degradation, also
    ``out/metrics.json`` (PSNR and SSIM of the degraded and the restored images, and ``lowered``:
    the measures the model made worse). All files are written or none; existing ones (the inputs,
    when ``out`` is their folder) are replaced only with ``overwrite``."""
    out = Path(out)
    check_output_names(paths)
    refuse_existing([*(out / f"{p.stem}.png" for p in paths), out / "grid.png", out / "metrics.json"], out,
                    overwrite=overwrite)
    with staged_folder(out) as stage:
        done = _restore_into(stage, model, paths, task=task, degradation=degradation, seed=seed,
                             shown=shown, command=command, model_path=model_path, out=out)
    if not done.metrics:  # an earlier run's scores would describe other images
        (out / "metrics.json").unlink(missing_ok=True)
    return done


def _restore_into(stage: Path, model: Autoencoder, paths: list[Path], *, task: Task,
                  degradation: Degradation | None, seed: int, shown: int, command: str | None,
                  model_path: str | None, out: Path) -> Restored:
    """:func:`restore_files`' work, every file written into ``stage`` (moved to ``out`` after)."""
    rows: dict[str, list[Tensor]] = {"clean": [], "input": [], "restored": []}
    metrics: list[dict[str, Any]] = []
    for k, path in enumerate(paths):
        image, holes = _read(path, model.input_shape[0], inpaint=task == "inpaint" and degradation is None)
        clean = None
        if degradation is not None:
            clean = image
            image, holes = degradation.apply(clean, seed=seed + k)
        restored = restore(model, image, holes)
        _save_png(stage / f"{path.stem}.png", restored[0])
        if clean is not None:
            metrics.append({"file": str(path), **_quality(image, restored, clean)})
        if len(rows["input"]) < shown:
            size = rows["input"][0].shape[-2:] if rows["input"] else image.shape[-2:]
            for name, img in (("input", image), ("restored", restored), ("clean", clean)):
                if img is not None:
                    rows[name].append(_fit(img[0], size))
    _save_grid(stage / "grid.png", rows)
    grid = out / "grid.png"
    done = Restored(len(paths), grid, metrics, note=training_note(model, task))
    if metrics:
        done.mean = paired_means(metrics)
        write_json(stage / "metrics.json", {
            "command": command, "task": task, "model": model_path, "note": done.note,
            "degradation": degradation.to_dict() if degradation else None, "seed": seed,
            "mean": done.mean, "lowered": done.lowered, "images": metrics, "machine": machine_info()})
    return done


def _read(path: Path, channels: int, inpaint: bool) -> tuple[Tensor, Tensor | None]:
    """(1, C, H, W) float image and, for inpainting, its transparent pixels as holes (zeroed)."""
    try:
        image = to_float(load_image(path, channels)).unsqueeze(0)
        holes = None
        if inpaint:
            pil = open_image(path)
            if "A" in pil.getbands():
                alpha = torch.from_numpy(np.asarray(pil.getchannel("A")).copy())
                holes = (alpha == 0)[None, None]
                image = image.masked_fill(holes, 0.0)
    except BadImage as e:
        raise AevisionError(f"{path}: {e}") from None
    return image, holes


def check_output_names(paths: list[Path]) -> None:
    """Every input writes ``<stem>.png`` beside ``grid.png``: two inputs of one stem (or one named
    grid) would overwrite each other's result, an error naming them."""
    seen: dict[str, Path] = {"grid": Path("grid.png (the grid of examples)")}
    for path in paths:
        other = seen.setdefault(path.stem, path)
        if other is not path:
            raise AevisionError(f"{path} and {other} would both be written as {path.stem}.png: restore "
                                f"them into different folders (or rename one)")


def _quality(degraded: Tensor, restored: Tensor, clean: Tensor) -> dict[str, float | None]:
    """PSNR and SSIM before and after; None for an infinite PSNR (an image the degradation, or the
    model, left identical to the clean one: no finite number, and strict JSON has no infinity)."""
    values = {"psnr_degraded": psnr(degraded, clean)[0], "psnr_restored": psnr(restored, clean)[0],
              "ssim_degraded": ssim(degraded, clean)[0], "ssim_restored": ssim(restored, clean)[0]}
    return {k: float(v) if bool(torch.isfinite(v)) else None for k, v in values.items()}


def paired_means(metrics: list[dict[str, Any]]) -> dict[str, float]:
    """Each measure's mean before and after over the images where both are finite: an image left
    unchanged by its degradation would make the PSNR's mean before restoring infinite, and one
    restored exactly (as rare) the mean after; both are left out of that measure's means."""
    means = {}
    for k in ("psnr", "ssim"):
        pairs = [(m[f"{k}_degraded"], m[f"{k}_restored"]) for m in metrics
                 if m[f"{k}_degraded"] is not None and m[f"{k}_restored"] is not None]
        if pairs:
            means[f"{k}_degraded"] = sum(a for a, _ in pairs) / len(pairs)
            means[f"{k}_restored"] = sum(b for _, b in pairs) / len(pairs)
    return means


def _save_png(path: Path, img: Tensor) -> None:
    from aevision.report.plots import save_image

    save_image(path, to_hwc(to_uint8(img)))


def _save_grid(path: Path, rows: dict[str, list[Tensor]]) -> Path:
    """Degraded / restored / clean rows when there are clean images, else input / restored."""
    from aevision.report import plots

    grid = {"input": torch.stack(rows["input"]), "restored": torch.stack(rows["restored"])}
    if rows["clean"]:
        grid = {"degraded (input)": grid["input"], "restored": grid["restored"],
                "clean": torch.stack(rows["clean"])}
    plots.labelled_grid(path, grid, " / ".join(k.split(" ")[0] for k in grid))
    return path


def _fit(img: Tensor, size: Any) -> Tensor:
    """Resize for display only, so that images of different sizes share the grid."""
    if tuple(img.shape[-2:]) == tuple(size):
        return img
    return F.interpolate(img[None], size=tuple(size), mode="bilinear", antialias=True,
                         align_corners=False)[0].clamp(0, 1)
