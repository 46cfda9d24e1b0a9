"""Apply a trained segmenter to image files: one palette-PNG mask (and overlay) per image.

Each image is resized to the size the segmenter was trained at (so objects appear at the scale it
learned), segmented, and its class scores are resized back to the image's own size before the
argmax: the mask has exactly the input's pixel grid, whatever its size.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from aevision.data.images import BadImage, is_image_path, load_image, visible_tree
from aevision.data.imageset import as_float
from aevision.errors import AevisionError, DataError
from aevision.io import write_json
from aevision.report.masks import save_mask, save_overlay
from aevision.tasks.segmentation.model import Segmenter
from aevision.validation import plural

log = logging.getLogger(__name__)


@torch.no_grad()
def predict_masks(seg: Segmenter, images: Tensor, device: Any = "cpu") -> Tensor:
    """Masks for ``images`` (N, C, H, W), uint8 or float in [0, 1], any size: (N, H, W) uint8.

    Images are segmented at the segmenter's training size (with its test-time flips, ``seg.tta``)
    and the class scores resized back.
    """
    seg = seg.to(device).eval()
    x = as_float(images)
    x = x.to(device)
    size = tuple(seg.input_shape[1:])
    small = x if tuple(x.shape[2:]) == size else F.interpolate(
        x, size=size, mode="bilinear", antialias=True, align_corners=False)
    scores = seg.scores(small) if seg.tta else seg.logits(small)  # no flips: logits, resized as ever
    if tuple(x.shape[2:]) != size:
        scores = F.interpolate(scores, size=tuple(x.shape[2:]), mode="bilinear", align_corners=False)
    return scores.argmax(dim=1).to(torch.uint8).cpu()


@dataclass
class Prediction:
    image: str
    mask: str
    overlay: str | None
    class_fractions: dict[str, float]


def image_files(inputs: Sequence[str | Path]) -> list[tuple[Path, Path]]:
    """(file, output name relative to the output folder) for files and folders (searched deeply)."""
    out: list[tuple[Path, Path]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = [p for p in visible_tree(path) if p.is_file() and is_image_path(p)]
            out += [(p, p.relative_to(path).with_suffix(".png")) for p in files]
        elif path.is_file():
            out.append((path, Path(path.stem + ".png")))
        else:
            raise AevisionError(f"{path}: no such file or folder")
    if not out:
        raise AevisionError("no image files found in " + ", ".join(str(i) for i in inputs))
    seen: set[Path] = set()
    for _, name in out:
        if name in seen:
            raise AevisionError(f"two inputs would both write {name}; give their folder instead of the files")
        seen.add(name)
    return out


def predict_files(seg: Segmenter, inputs: Iterable[str | Path], out_dir: str | Path, *,
                  overlays: bool = True, device: Any = "cpu") -> list[Prediction]:
    """Segment every image under ``inputs``; write ``out_dir/masks/<name>.png`` (palette PNG,
    pixel value = class id), ``out_dir/overlays/<name>.png`` and ``out_dir/predictions.json``."""
    out_dir = Path(out_dir)
    c = seg.input_shape[0]
    done: list[Prediction] = []
    skipped: list[dict[str, str]] = []
    for path, name in image_files(list(inputs)):
        try:
            image = load_image(path, c)
        except BadImage as e:
            skipped.append({"path": str(path), "reason": str(e)})
            continue
        mask = predict_masks(seg, image[None], device)[0]
        save_mask(out_dir / "masks" / name, mask, seg.palette)
        over = None
        if overlays:
            save_overlay(out_dir / "overlays" / name, image, mask, seg.palette)
            over = str(out_dir / "overlays" / name)
        counts = torch.bincount(mask.flatten().long(), minlength=len(seg.classes))[: len(seg.classes)]
        fractions = {k: round(float(v) / mask.numel(), 6) for k, v in zip(seg.classes, counts, strict=True)}
        done.append(Prediction(str(path), str(out_dir / "masks" / name), over, fractions))
    if skipped and not done:
        raise DataError(f"{skipped[0]['path']}: {skipped[0]['reason']}; no input was a readable image "
                        f"({plural(len(skipped), 'file')} tried), nothing written")
    if skipped:
        log.warning("skipped %d unreadable files (e.g. %s: %s)", len(skipped), skipped[0]["path"],
                    skipped[0]["reason"])
    write_json(out_dir / "predictions.json", {
        "classes": seg.classes,
        "palette": seg.palette,
        "predictions": [p.__dict__ for p in done],
        "skipped_files": skipped,
    })
    return done
