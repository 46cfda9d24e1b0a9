"""``moving-shapes``: generated videos of shapes that move and bounce, with their true positions.

Each sequence shows one *main* shape (circle, square or triangle; the sequence's label) and up to
``max_shapes - 1`` smaller distractor shapes over a textured background that stays put while
fresh pixel noise is drawn for every frame (a static camera with sensor noise). Shapes move at a
constant velocity, bounce off the walls and turn slowly. The ground truth is the centre of every
shape in every frame: slot 0 is the main shape, slots 1.. the distractors by decreasing size (NaN
where a sequence has fewer shapes). Same seed, same videos; nothing is downloaded. Drawing reuses
the rasterizer of :mod:`aevision.data.shapes`.

"Where is the main shape?" must have one answer in every frame, so the main shape is recognisable
without context, as a target object is in a robot's scenes: it has twice the area of any
distractor (sizes are equal-area radii, whatever the kind) and a hue of its own (``main_hue``,
default 0.15, a yellow that stays bright in the grey image a DSAE reconstructs; distractors take
hues well away from it). ``main_hue=null`` gives every shape a random colour: then only size
tells the main shape apart.
"""

from __future__ import annotations

import colorsys
import math

import numpy as np
import torch

from aevision.data.registry import DATASETS, Source, Splits
from aevision.data.shapes import paint, random_colour, shape_mask, textured_background
from aevision.data.video import VideoSet
from aevision.validation import check

MOVING_KINDS = ("circle", "square", "triangle")
MAIN_RADIUS = (0.12, 0.15)  # equal-area radii, as fractions of the frame size
DISTRACTOR_RADIUS = (0.05, 0.08)
# shape_mask's r for a shape as large as a circle of radius 1 (square side 1.6 r, triangle
# circumradius r), and how far the shape reaches from its centre per unit r, turned any way
AREA_SCALE = {"circle": 1.0, "square": math.sqrt(math.pi / 2.56), "triangle": math.sqrt(math.pi / 1.299)}
REACH = {"circle": 1.0, "square": 0.8 * math.sqrt(2), "triangle": 1.0}
HUE_GAP = 0.2  # distractor hues stay at least this far round the colour wheel from the main hue


def hue_colour(rng: np.random.Generator, hue: float) -> np.ndarray:
    """A saturated, bright RGB colour of the given hue (0..1 round the wheel)."""
    r, g, b = colorsys.hsv_to_rgb(hue % 1.0, rng.uniform(0.75, 1.0), rng.uniform(0.85, 1.0))
    return np.array([r, g, b], dtype=np.float32)


def bounce(start: float, velocity: float, low: float, high: float, steps: int) -> np.ndarray:
    """Positions of a point moving at ``velocity`` and reflecting off ``low`` and ``high``: (steps,)."""
    span = high - low
    if span <= 0:
        return np.full(steps, (low + high) / 2, dtype=np.float64)
    # unfold the reflections: motion on a circle of length 2 * span, folded back into [low, high]
    u = np.mod(start - low + velocity * np.arange(steps), 2 * span)
    return low + np.where(u <= span, u, 2 * span - u)


def moving_shapes(
    n: int, frames: int, size: int, seed: int, *, max_shapes: int = 3,
    kinds: tuple[str, ...] = MOVING_KINDS, noise: float = 0.04, speed: tuple[float, float] = (0.02, 0.05),
    main_hue: float | None = 0.15,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` videos: ((n, T, 3, size, size) uint8, centres (n, T, max_shapes, 2), labels (n,)).

    ``speed`` is in frame sizes per frame; ``noise`` the std of the per-frame pixel noise;
    ``main_hue``: the main shape's hue (None: random colours for every shape).
    """
    rng = np.random.default_rng(seed)
    backgrounds = textured_background(rng, n, size, size, grain=0.0)
    labels = rng.integers(len(kinds), size=n)
    video = np.empty((n, frames, 3, size, size), dtype=np.uint8)
    centres = np.full((n, frames, max_shapes, 2), np.nan, dtype=np.float32)
    for i in range(n):
        count = int(rng.integers(1, max_shapes + 1))
        radii = [rng.uniform(*MAIN_RADIUS) * size]
        radii += sorted((rng.uniform(*DISTRACTOR_RADIUS) * size for _ in range(count - 1)), reverse=True)
        shapes = []
        for k, radius in enumerate(radii):
            kind = kinds[labels[i]] if k == 0 else kinds[int(rng.integers(len(kinds)))]
            r = radius * AREA_SCALE.get(kind, 1.0)
            heading = rng.uniform(0, 2 * np.pi)
            v = rng.uniform(*speed) * size
            reach = r * REACH.get(kind, 1.0)
            low, high = reach, size - 1 - reach  # pixel centres run from 0 to size - 1
            x = bounce(rng.uniform(low, high), v * np.cos(heading), low, high, frames)
            y = bounce(rng.uniform(low, high), v * np.sin(heading), low, high, frames)
            angle = rng.uniform(0, 2 * np.pi) + rng.uniform(-0.08, 0.08) * np.arange(frames)
            if main_hue is None:
                colour = random_colour(rng)
            elif k == 0:
                colour = hue_colour(rng, main_hue + rng.uniform(-0.03, 0.03))
            else:
                colour = hue_colour(rng, main_hue + rng.uniform(HUE_GAP, 1 - HUE_GAP))
            shapes.append((kind, reach, r, x, y, angle, colour))
            centres[i, :, k, 0], centres[i, :, k, 1] = x, y
        grain = rng.normal(0.0, noise, (frames, 3, size, size)).astype(np.float32)
        for t in range(frames):
            image = backgrounds[i].copy()
            for kind, reach, r, x, y, angle, colour in reversed(shapes):  # the main shape on top
                # rasterize only the shape's bounding box: same pixels, a fraction of the work
                x0, y0 = max(0, int(x[t] - reach) - 2), max(0, int(y[t] - reach) - 2)
                x1, y1 = min(size, int(x[t] + reach) + 3), min(size, int(y[t] + reach) + 3)
                cov = shape_mask(kind, x[t] - x0, y[t] - y0, r, angle[t], y1 - y0, x1 - x0, 3)
                paint(image[:, y0:y1, x0:x1], cov, colour)
            image += grain[t]
            video[i, t] = np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
    return torch.from_numpy(video), torch.from_numpy(centres), torch.from_numpy(labels.astype(np.int64))


@DATASETS.register("moving-shapes", "generated videos: 1-3 shapes moving and bouncing over noisy "
                   "textured backgrounds, with true centres per frame; label = main shape (no download)")
def moving_shapes_dataset(
    source: Source, *, n_train: int = 160, n_test: int = 40, frames: int = 32, size: int = 64,
    max_shapes: int = 3, noise: float = 0.04, main_hue: float | None = 0.15, seed: int = 1234,
) -> Splits:
    """The test sequences are generated with the training ones from one seed and kept apart."""
    check(n_train >= 1, "data.n_train", n_train, "an integer >= 1")
    check(n_test >= 0, "data.n_test", n_test, "an integer >= 0")
    check(frames >= 1, "data.frames", frames, "an integer >= 1")
    check(size >= 16, "data.size", size, "an integer >= 16")
    check(1 <= max_shapes <= 8, "data.max_shapes", max_shapes, "an integer in [1, 8]")
    check(0.0 <= noise <= 0.5, "data.noise", noise, "a standard deviation in [0, 0.5]")
    if main_hue is not None:
        check(0.0 <= main_hue <= 1.0, "data.main_hue", main_hue, "a hue in [0, 1] (0 red, 1/3 green, "
              "2/3 blue) or null for random colours")
    video, centres, labels = moving_shapes(n_train + n_test, frames, size, seed, max_shapes=max_shapes,
                                           noise=noise, main_hue=main_hue)
    data = VideoSet(video, labels, list(MOVING_KINDS), "moving-shapes", centres)
    return Splits(train=data.subset(range(n_train)),
                  test=data.subset(range(n_train, n_train + n_test)) if n_test else None)
