"""Test-time flips: a prediction averaged over an image and its mirror images.

A photo's class, and which pixels are a person, do not depend on which way the scene faces, but a
trained network's scores do a little; averaging the class probabilities of an image and of its
mirror image removes that part of the error (fast CIFAR-10 recipes such as Keller Jordan's
airbench score this way). Training is unchanged: only prediction averages. Used by segmentation
(``segment.tta``, per-pixel scores flipped back before averaging) and fine-tuned classifiers
(``finetune.tta``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

from torch import Tensor

# the dimension of an (N, C, H, W) batch each flip mirrors
TTA_FLIPS = {"hflip": -1, "vflip": -2}


def valid_tta(names: Sequence[str]) -> bool:
    """Distinct names of ``TTA_FLIPS`` (the rule of every ``tta`` option)."""
    return all(name in TTA_FLIPS for name in names) and len(set(names)) == len(names)


def tta_rule() -> str:
    """What a ``tta`` option takes, for its error message."""
    return f"a list of distinct test-time flips among {', '.join(TTA_FLIPS)} (or [])"


def flip_averaged(scores: Callable[[Tensor], Tensor], x: Tensor, names: Sequence[str], *,
                  spatial: bool) -> Tensor:
    """The mean of ``scores`` over ``x`` (N, C, H, W) and its flips ``names``, every combination
    of them (none: ``scores(x)`` itself). ``spatial``: the scores are maps (N, K, H, W), flipped
    back before averaging; otherwise per image (N, K), averaged as they are."""
    dims = [TTA_FLIPS[name] for name in names]
    views = [flip for n in range(len(dims) + 1) for flip in itertools.combinations(dims, n)]
    return sum(_view(scores, x, flip, spatial) for flip in views) / len(views)


def _view(scores: Callable[[Tensor], Tensor], x: Tensor, flip: tuple[int, ...], spatial: bool) -> Tensor:
    """``scores`` of ``x`` flipped along ``flip`` (no dims: as it is), maps flipped back."""
    if not flip:
        return scores(x)
    s = scores(x.flip(flip))
    return s.flip(flip) if spatial else s

