"""``oxford-pet``: the Oxford-IIIT Pet photos with their pet/background trimaps (torchvision).

Read from ``<data root>/oxford-iiit-pet/`` in torchvision's layout, downloaded there (checksums
verified by torchvision) when missing and online. Trimap pixels are 1 = pet, 2 = background,
3 = the uncertain border; the border becomes the unknown label (255), which losses and metrics
skip, as in the usual benchmark protocol. The official trainval / test split is kept.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from PIL import Image

from aevision.data.images import to_array
from aevision.data.registry import Source
from aevision.data.segmentation import register_segmentation
from aevision.data.segset import IGNORE_INDEX, SegSet, SegSplits
from aevision.errors import DataError

FOLDER = "oxford-iiit-pet"
DEFAULT_SIZE = (128, 128)
# trimap value -> class id: 1 pet -> 1, 2 background -> 0, 3 border -> unknown
_TRIMAP = np.array([IGNORE_INDEX, 1, 0, IGNORE_INDEX], dtype=np.uint8)


def trimap_to_mask(trimap: np.ndarray) -> np.ndarray:
    """(H, W) trimap values 1/2/3 -> (H, W) uint8 class ids 1 pet / 0 background / 255 unknown."""
    t = np.asarray(trimap).astype(np.int64)
    if t.size and (t.min() < 1 or t.max() > 3):
        raise DataError(f"oxford-pet: trimap values must be 1, 2 or 3, found {int(t.min())}..{int(t.max())}")
    return _TRIMAP[t]


def _open(source: Source, split: str) -> Any:
    from torchvision.datasets import OxfordIIITPet

    root = str(source.root)
    try:
        return OxfordIIITPet(root, split=split, target_types="segmentation", download=False)
    except RuntimeError:
        pass  # not there yet
    expected = source.root / FOLDER
    if not source.download:
        raise DataError(f"oxford-pet: dataset files not found under {expected} (download is off; "
                        f"put the files there or set data.root / AEVISION_DATA to the folder that "
                        f"holds {FOLDER}/)")
    try:
        return OxfordIIITPet(root, split=split, target_types="segmentation", download=True)
    except Exception as e:
        raise DataError(f"oxford-pet: dataset files not found under {expected} and download failed "
                        f"({type(e).__name__}); when offline, set data.root / AEVISION_DATA to a folder "
                        f"that holds {FOLDER}/") from None


def _load_split(source: Source, split: str, size: tuple[int, int], channels: int) -> SegSet:
    ds = _open(source, split)

    def one(i: int) -> tuple[torch.Tensor, np.ndarray]:
        image, trimap = ds[i]
        image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR, reducing_gap=3.0)
        trimap = trimap.resize((size[1], size[0]), Image.Resampling.NEAREST)
        arr = to_array(image, channels)
        return torch.from_numpy(arr.transpose(2, 0, 1).copy()), trimap_to_mask(np.asarray(trimap))

    with ThreadPoolExecutor(max_workers=4) as pool:
        decoded = list(pool.map(one, range(len(ds))))
    return SegSet(torch.stack([d[0] for d in decoded]),
                  torch.from_numpy(np.stack([d[1] for d in decoded])),
                  ["background", "pet"], "oxford-pet")


@register_segmentation("oxford-pet", "Oxford-IIIT Pet photos, pet/background masks from the trimaps "
                       "(border = unknown); 3,680 trainval / 3,669 test (torchvision)")
def oxford_pet(source: Source) -> SegSplits:
    size = tuple(source.image_size) if source.image_size else DEFAULT_SIZE
    channels = source.channels or 3
    return SegSplits(train=_load_split(source, "trainval", size, channels),  # type: ignore[arg-type]
                     test=_load_split(source, "test", size, channels))  # type: ignore[arg-type]
