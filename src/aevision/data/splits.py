"""Deterministic splits and labelled subsets: the same seed always selects the same images."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from aevision.data.imageset import ImageSet
from aevision.errors import AevisionError


def generator(seed: int, *stream: int) -> torch.Generator:
    """A CPU generator for ``seed`` and an optional stream id (epoch, budget, ...).

    Mixing the stream into the seed keeps draws independent of how many draws came before, so a
    resumed run shuffles epoch 7 exactly as an uninterrupted one does.
    """
    g = torch.Generator()
    value = int(seed)
    for s in stream:
        value = (value * 1_000_003 + int(s) + 1) % (2**63 - 1)
    g.manual_seed(value)
    return g


def permutation(n: int, seed: int, *stream: int) -> Tensor:
    return torch.randperm(n, generator=generator(seed, *stream))


LIMIT_STREAM = 5


def limited(n: int, limit: int | None, seed: int) -> Tensor:
    """Positions of the ``limit`` items (of ``n``) that a limit keeps, ascending: a seeded draw,
    not the first ``limit``, because datasets are often stored in class order (a class-folder
    split's first 1,000 images are one class). A smaller limit keeps a subset of a larger one's
    items (the draws are prefixes of one permutation), so a 30-image query set lies inside a
    200-image gallery drawn with the same seed. Shape: (min(n, limit),), int64."""
    if limit is None or limit >= n:
        return torch.arange(n)
    return permutation(n, seed, LIMIT_STREAM)[:limit].sort().values


def train_val_split(data: ImageSet, fraction: float, seed: int) -> tuple[ImageSet, ImageSet | None]:
    """Hold out ``fraction`` of ``data`` (stratified by label when there are labels)."""
    found = train_val_indices(len(data), data.labels, fraction, seed)
    if found is None:
        return data, None
    return data.subset(found[0]), data.subset(found[1])


def train_val_indices(n: int, labels: Tensor | None, fraction: float, seed: int
                      ) -> tuple[Tensor, Tensor] | None:
    """The (train, validation) indices :func:`train_val_split` takes from ``n`` items with
    ``labels``, or None when it holds nothing out."""
    if fraction <= 0 or n < 2:
        return None
    if labels is None:
        perm = permutation(n, seed, 17)
        n_val = max(1, round(fraction * n))
        return perm[n_val:], perm[:n_val]
    val_idx: list[Tensor] = []
    train_idx: list[Tensor] = []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[permutation(len(idx), seed, 17, c)]
        n_val = round(fraction * len(idx)) if len(idx) > 1 else 0
        val_idx.append(idx[:n_val])
        train_idx.append(idx[n_val:])
    val = torch.cat(val_idx).sort().values
    if len(val) == 0:
        return None
    return torch.cat(train_idx).sort().values, val


class Carve(NamedTuple):
    """How ``pretrain`` took its train and validation images from a dataset: built with its
    ``options`` (``data.options``: a crops set's ``per_image``, digits' ``test_fraction``), then
    ``limit`` of the training images drawn with ``seed`` (None: all), then ``fraction`` held out
    with ``seed`` (as :func:`aevision.data.registry.load_dataset` does), so another command can
    name the very images a model trained and validated on."""

    fraction: float
    seed: int
    limit: int | None = None
    options: dict[str, Any] | None = None

    def rows(self, n: int, labels: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """(train, val) positions among the ``n`` training images (val None: none held out)."""
        keep = limited(n, self.limit, self.seed)
        kept_labels = None if labels is None else labels[keep]
        found = train_val_indices(len(keep), kept_labels, self.fraction, self.seed)
        return (keep, None) if found is None else (keep[found[0]], keep[found[1]])


def labelled_subset(labels: Tensor, per_class: int | None, seed: int, total: int | None = None) -> Tensor:
    """Indices of a class-balanced labelled subset.

    ``per_class`` images of every class, or ``total`` images spread as evenly as the classes
    allow; ``None`` for both means every index. Raises when a class has too few images.
    """
    classes = torch.unique(labels).tolist()
    if per_class is None and total is None:
        return torch.arange(len(labels))
    if total is not None:
        if total < len(classes):
            raise AevisionError(
                f"label budget {total} is smaller than the number of classes ({len(classes)})"
            )
        base, extra = divmod(total, len(classes))
        extra_classes = set(permutation(len(classes), seed, 29)[:extra].tolist())
        counts = {c: base + (1 if i in extra_classes else 0) for i, c in enumerate(classes)}
    else:
        counts = {c: int(per_class) for c in classes}  # type: ignore[arg-type]
    chosen: list[Tensor] = []
    for c in classes:
        idx = torch.nonzero(labels == c).flatten()
        if len(idx) < counts[c]:
            raise AevisionError(
                f"class {c} has {len(idx)} labelled images, fewer than the {counts[c]} asked for"
            )
        chosen.append(idx[permutation(len(idx), seed, 31, c)[: counts[c]]])
    return torch.cat(chosen).sort().values


def long_tailed_subset(labels: Tensor, ratio: float, seed: int) -> Tensor:
    """Indices of a long-tailed subset: class i of K (in label order) keeps
    ``n * ratio ** (-i / (K - 1))`` images, where n is the size of the smallest class, so the
    first class is ``ratio`` times larger than the last (the exponential profile of Cui et al.
    2019). Which images each class keeps is seeded.
    """
    if ratio < 1:
        raise AevisionError(f"imbalance ratio {ratio}: expected a number >= 1 (largest / smallest class)")
    classes = torch.unique(labels).tolist()
    k = len(classes)
    n = min(int((labels == c).sum()) for c in classes)
    chosen: list[Tensor] = []
    for i, c in enumerate(classes):
        keep = max(1, round(n * ratio ** (-i / (k - 1)))) if k > 1 else n
        idx = torch.nonzero(labels == c).flatten()
        chosen.append(idx[permutation(len(idx), seed, 37, c)[:keep]])
    return torch.cat(chosen).sort().values
