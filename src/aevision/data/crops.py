"""``crops:PATH``: fixed-size random crops of a folder of photographs of any sizes.

Learned codecs and restorers are fully convolutional: they train on small patches and run on
whole images of any size. Photo folders rarely share one size, so instead of resizing whole
photos (which changes their statistics), every photo gives ``per_image`` square crops of
``size`` pixels, each from the photo rescaled by a random factor in [``min_scale``, 1]
(antialiased; downscaling also averages away sensor noise and old JPEG blocks). Crop positions
and scales follow ``seed``, so the crop set is the same on every run. With ``test_fraction``,
whole photos (not crops) are held out, so no test crop shares a photo with training.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from aevision.data import loading
from aevision.data.folder import split_folders
from aevision.data.images import BadImage, decode_many, visible_tree
from aevision.data.imageset import ImageSet, Skipped
from aevision.data.registry import DATASETS, TEST_SPLIT_SEED, Source, Splits, takes_argument
from aevision.data.splits import generator, permutation
from aevision.errors import DataError
from aevision.io import user_path
from aevision.validation import check

log = logging.getLogger(__name__)


def random_crops(image: Tensor, size: int, count: int, min_scale: float, g: torch.Generator) -> Tensor:
    """(C, H, W) uint8 -> (count, C, size, size) uint8 crops at random scales and positions.

    A crop at scale s is a square of side size / s of the photo, resized to ``size`` (the same
    pixels as cropping the photo resized by s, without resizing the whole photo).
    """
    h, w = image.shape[1:]
    lowest = max(min_scale, size / min(h, w))  # a region never exceeds the photo
    out = []
    for _ in range(count):
        scale = lowest + (1.0 - lowest) * float(torch.rand((), generator=g)) if lowest < 1 else 1.0
        side = min(h, w, max(size, round(size / scale)))
        top = int(torch.randint(0, h - side + 1, (), generator=g))
        left = int(torch.randint(0, w - side + 1, (), generator=g))
        region = image[:, top:top + side, left:left + side]
        if side != size:
            region = F.interpolate(region[None].float(), size=(size, size), mode="bilinear",
                                   antialias=True, align_corners=False)[0]
            region = region.round().clamp(0, 255).to(torch.uint8)
        out.append(region)
    return torch.stack(out)


def photo_files(root: Path) -> list[Path]:
    """Every file under ``root``, in subfolders too (photos are unlabelled: folders only group
    them), hidden ones left out; a folder of train/ + test/ splits is an error naming train/."""
    if not root.is_dir():
        raise DataError(f"crops:{root}: no such folder")
    if split_folders(root) is not None:
        raise DataError(f"crops:{root}: holds the splits train/ and test/: crop the training photos, "
                        f"crops:{root / 'train'}")
    return [p for p in visible_tree(root) if p.is_file()]


@DATASETS.register("crops", "crops:PATH: random square crops of a folder of photos of any sizes "
                   "(for fully convolutional codecs and restorers)")
@takes_argument
def crops(source: Source, *, size: int = 128, per_image: int = 16, min_scale: float = 1.0,
          seed: int = 0, test_fraction: float = 0.0) -> Splits:
    check(size >= 8, "data.size", size, "an integer >= 8")
    check(per_image >= 1, "data.per_image", per_image, "an integer >= 1")
    check(0 < min_scale <= 1, "data.min_scale", min_scale, "a number in (0, 1]")
    check(0 <= test_fraction < 1, "data.test_fraction", test_fraction, "a fraction in [0, 1)")
    assert source.argument is not None
    root = user_path(source.argument)
    skipped: list[Skipped] = []
    paths = loading.with_image_suffix(photo_files(root), skipped)
    channels = source.channels or loading.guess_channels(paths)
    photos: list[tuple[Path, Tensor]] = []
    for p, result in zip(paths, decode_many(paths, channels, None), strict=True):
        if isinstance(result, BadImage):
            if source.strict:
                raise DataError(f"{p}: {result} (strict mode)")
            skipped.append(Skipped(str(p), str(result)))
        elif min(result.shape[1:]) < size:
            skipped.append(Skipped(str(p), f"smaller than the crop size {size}"))
        else:
            photos.append((p, result))
    if not photos:
        raise DataError(f"crops:{root}: no readable image of at least {size}x{size} pixels"
                        f"{loading.skipped_example(skipped)}")
    if skipped:
        log.warning("crops:%s: left out %d of %d files (e.g. %s: %s)", root, len(skipped),
                    len(skipped) + len(photos), skipped[0].path, skipped[0].reason)
    n_test = round(test_fraction * len(photos))
    held_out = set(permutation(len(photos), TEST_SPLIT_SEED)[:n_test].tolist())

    def build(indices: list[int], name: str) -> ImageSet:
        g = generator(seed, 7)
        parts, names = [], []
        for i in indices:
            path, img = photos[i]
            parts.append(random_crops(img, size, per_image, min_scale, g))
            names += [str(path)] * per_image
        return ImageSet(torch.cat(parts), name=name, files=names, skipped=skipped)

    name = f"crops:{root}"
    train = build([i for i in range(len(photos)) if i not in held_out], name)
    test = build(sorted(held_out), name) if held_out else None
    return Splits(train=train, test=test)
