"""``shapes-seg``: generated images of overlapping shapes with exact pixel masks (no download).

Each image holds a few shapes of random kind, size, angle and colour over a textured background,
then pixel noise over everything; later shapes occlude earlier ones. A pixel's class is the kind
of the topmost shape whose hard mask (sampled at the pixel centre) covers it, else background.
Colour says nothing about the class, so a segmenter must recognise the shape around each pixel:
local colour edges are not enough.
"""

from __future__ import annotations

import numpy as np
import torch

from aevision.data.registry import Source
from aevision.data.segmentation import register_segmentation
from aevision.data.segset import SegSet, SegSplits
from aevision.data.shapes import KINDS, paint, random_colour, shape_mask, textured_background
from aevision.validation import check

DEFAULT_KINDS = ("circle", "square", "triangle")
SEED = 4321  # fixed: the images (and so the test split) never depend on --seed


def shapes_segmentation(
    n: int, size: int, seed: int, kinds: tuple[str, ...] = DEFAULT_KINDS,
    min_shapes: int = 1, max_shapes: int = 3, radius: tuple[float, float] = (0.16, 0.28),
    noise: float = 0.04,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images with their masks: ((n, 3, size, size) uint8, (n, size, size) uint8).

    Mask ids: 0 = background, ``i + 1`` = ``kinds[i]``. ``radius``: shape radii as fractions of
    the image side; ``noise``: standard deviation of the pixel grain added to the whole image.
    """
    rng = np.random.default_rng(seed)
    images = textured_background(rng, n, size, size, grain=0.0)
    masks = np.zeros((n, size, size), dtype=np.uint8)
    for i in range(n):
        for _ in range(int(rng.integers(min_shapes, max_shapes + 1))):
            k = int(rng.integers(len(kinds)))
            r = rng.uniform(*radius) * size
            cx, cy = rng.uniform(0.7 * r, size - 0.7 * r, 2)
            angle = rng.uniform(0, 2 * np.pi)
            paint(images[i], shape_mask(kinds[k], cx, cy, r, angle, size, size, 3), random_colour(rng))
            hard = shape_mask(kinds[k], cx, cy, r, angle, size, size, 1) > 0.5
            masks[i][hard] = k + 1
    if noise > 0:  # grain over shapes and background alike
        images = np.clip(images + rng.normal(0.0, noise, images.shape).astype(np.float32), 0.0, 1.0)
    out = torch.from_numpy(np.round(images * 255.0).astype(np.uint8))
    return out, torch.from_numpy(masks)


@register_segmentation("shapes-seg", "generated overlapping shapes with pixel masks, K kinds + "
                       "background (no download)")
def shapes_seg(
    source: Source, *, n_train: int = 2000, n_test: int = 500, size: int = 32,
    kinds: list[str] | None = None, min_shapes: int = 1, max_shapes: int = 3, noise: float = 0.04,
) -> SegSplits:
    kinds = list(kinds or DEFAULT_KINDS)
    check(n_train >= 1, "data.n_train", n_train, "an integer >= 1")
    check(n_test >= 0, "data.n_test", n_test, "an integer >= 0")
    check(size >= 8, "data.size", size, "an integer >= 8")
    check(len(kinds) >= 1 and len(set(kinds)) == len(kinds), "data.kinds", kinds,
          "a non-empty list of distinct shape kinds")
    for i, k in enumerate(kinds):
        check(k in KINDS, f"data.kinds[{i}]", k, "one of " + ", ".join(KINDS))
    check(min_shapes >= 1, "data.min_shapes", min_shapes, "an integer >= 1")
    check(max_shapes >= min_shapes, "data.max_shapes", max_shapes, f"an integer >= {min_shapes}")
    check(0 <= noise <= 1, "data.noise", noise, "a standard deviation in [0, 1]")
    # train and test come from separate streams, so changing n_train never changes the test set
    classes = ["background", *kinds]
    tr_img, tr_mask = shapes_segmentation(n_train, size, SEED, tuple(kinds), min_shapes, max_shapes,
                                          noise=noise)
    train = SegSet(tr_img, tr_mask, classes, "shapes-seg")
    test = None
    if n_test:
        te_img, te_mask = shapes_segmentation(n_test, size, SEED + 1, tuple(kinds), min_shapes, max_shapes,
                                              noise=noise)
        test = SegSet(te_img, te_mask, classes, "shapes-seg")
    return SegSplits(train=train, test=test)
