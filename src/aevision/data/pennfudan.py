"""``penn-fudan``: the Penn-Fudan pedestrian photos (170 street scenes) as person/background masks.

Read from ``<data root>/PennFudanPed/`` (``PNGImages/`` and ``PedMasks/`` as distributed, the
layout torchvision's detection tutorial uses). The instance masks (0 = background, 1..N = one id
per pedestrian) become one ``person`` class. The photos differ in size (up to 1017 x 581), so they
are resized to ``data.image_size`` (default 96 x 128, height x width, about their mean aspect);
each mask is resized as a 0/1 coverage map and thresholded at one half, which keeps thin limbs
better than nearest-neighbour sampling. The 50-image test split is fixed.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from aevision.data.images import BadImage, is_hidden, open_image, read_image
from aevision.data.registry import Source
from aevision.data.segmentation import fixed_test_split, register_segmentation
from aevision.data.segset import SegSet, SegSplits
from aevision.errors import DataError
from aevision.validation import check

FOLDER = "PennFudanPed"
URL = "https://www.cis.upenn.edu/~jshi/ped_html/PennFudanPed.zip"
DEFAULT_SIZE = (96, 128)


def person_mask(path: Path, size: tuple[int, int]) -> np.ndarray:
    """Instance mask file -> (H, W) uint8, 1 where any pedestrian is, resized to ``size``."""
    try:
        img = open_image(path)
    except BadImage as e:
        raise DataError(f"{path}: cannot read mask ({e})") from None
    person = (np.asarray(img) > 0).astype(np.uint8) * 255
    if person.ndim != 2:
        raise DataError(f"{path}: expected a single-channel instance mask, got mode {img.mode}")
    cover = Image.fromarray(person).resize((size[1], size[0]), Image.Resampling.BILINEAR, reducing_gap=3.0)
    return (np.asarray(cover) >= 128).astype(np.uint8)


def load_pennfudan(root: Path, size: tuple[int, int], channels: int = 3) -> SegSet:
    folder = root / FOLDER
    images_dir, masks_dir = folder / "PNGImages", folder / "PedMasks"
    if not images_dir.is_dir() or not masks_dir.is_dir():
        raise DataError(f"penn-fudan: {folder} has no PNGImages/ and PedMasks/ (download and unzip "
                        f"{URL} there, or set data.root / AEVISION_DATA to the folder holding {FOLDER}/)")
    files = sorted(p for p in images_dir.glob("*.png") if not is_hidden(p.name))
    if not files:
        raise DataError(f"penn-fudan: no .png images in {images_dir}")

    def one(p: Path) -> tuple[torch.Tensor, np.ndarray]:
        mask = masks_dir / f"{p.stem}_mask.png"
        if not mask.is_file():
            raise DataError(f"penn-fudan: no mask for {p.name} (expected {mask})")
        return read_image(p, channels, size), person_mask(mask, size)

    with ThreadPoolExecutor(max_workers=4) as pool:
        decoded = list(pool.map(one, files))
    images = torch.stack([d[0] for d in decoded])
    masks = torch.from_numpy(np.stack([d[1] for d in decoded]))
    return SegSet(images, masks, ["background", "person"], "penn-fudan", [str(p) for p in files])


@register_segmentation("penn-fudan", "Penn-Fudan pedestrians: 170 street photos, person masks "
                       "(read from <data root>/PennFudanPed; fixed 50-image test split)")
def penn_fudan(source: Source, *, n_test: int = 50) -> SegSplits:
    check(0 <= n_test < 170, "data.n_test", n_test, "an integer in [0, 170)")
    size = tuple(source.image_size) if source.image_size else DEFAULT_SIZE
    data = load_pennfudan(Path(source.root), size, source.channels or 3)  # type: ignore[arg-type]
    return fixed_test_split(data, n_test)
