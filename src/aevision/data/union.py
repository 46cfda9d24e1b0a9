"""``union``: the images of several datasets as one unlabelled set, for pretraining on a pool.

A user's pool of unlabelled photos is usually several folders, or several datasets' training
photos. ``data.options.datasets`` lists the parts, each a dataset name as ``data.name`` takes it
(``folder:PATH``, ``penn-fudan``) or a mapping ``{name: ..., options: {...}}`` for a part with its
own options. Every part is loaded with the union's ``root``, ``channels`` and ``image_size``
(which they must then share: set ``data.image_size`` when they differ) and no validation split;
the union's training split is every part's training images in order, each followed by the
part's own validation images if it has some (a val/ folder; a segmentation dataset's photos
without masks included, never its test photos), its test split every part's test images.
Labels are dropped: parts do not share classes. Validation is carved from the union as usual.

    data: {name: union, image_size: [160, 128],
           options: {datasets: [clothing-co-parsing, penn-fudan, "folder:/photos/mine"]}}
"""

from __future__ import annotations

from typing import Any

import torch

from aevision.config import DataConfig
from aevision.data.imageset import ImageSet
from aevision.data.registry import DATASETS, Source, Splits, load_dataset
from aevision.data.video import VideoSet
from aevision.errors import ConfigError, DataError


def part_config(i: int, part: Any, source: Source) -> DataConfig:
    """The ``DataConfig`` of part ``i``: its name and options, the union's root, channels and size."""
    field = f"data.options.datasets[{i}]"
    if isinstance(part, str):
        part = {"name": part}
    if not isinstance(part, dict) or not isinstance(part.get("name"), str) \
            or set(part) - {"name", "options"} or not isinstance(part.get("options", {}), dict):
        raise ConfigError(field, part, "a dataset name, or a mapping {name: ..., options: {...}}")
    if part["name"].partition(":")[0] == "union":
        raise ConfigError(field, part["name"], "a dataset other than union")
    return DataConfig(name=part["name"], root=str(source.root), channels=source.channels,
                      image_size=list(source.image_size) if source.image_size else None,
                      val_fraction=0.0, download=source.download, strict=source.strict,
                      options=dict(part.get("options", {})))


def joined(sets: list[ImageSet | VideoSet | None], names: list[str], name: str) -> ImageSet | None:
    """One unlabelled :class:`ImageSet` of the sets' images (None when every set is None)."""
    present = [(s, n) for s, n in zip(sets, names, strict=True) if s is not None and len(s)]
    if not present:
        return None
    for s, n in present:
        if isinstance(s, VideoSet):
            raise DataError(f"union: {n} is a video dataset; a union joins image datasets")
        if s.image_shape != present[0][0].image_shape:
            raise DataError(f"union: {n} has {'x'.join(map(str, s.image_shape))} images, "
                            f"{present[0][1]} {'x'.join(map(str, present[0][0].image_shape))} "
                            f"(set data.image_size and data.channels)")
    files = [f for s, _ in present for f in (s.files or [""] * len(s))]
    skipped = [k for s, _ in present for k in s.skipped]
    return ImageSet(torch.cat([s.images for s, _ in present]), name=name, files=files, skipped=skipped)


@DATASETS.register("union", "the images of several datasets as one unlabelled pool (options.datasets: "
                   "names such as folder:PATH or penn-fudan; test splits stay test)")
def union(source: Source, *, datasets: list[Any]) -> Splits:
    if not datasets:
        raise ConfigError("data.options.datasets", datasets, "a list of one or more datasets")
    configs = [part_config(i, part, source) for i, part in enumerate(datasets)]
    parts = [load_dataset(cfg, seed=0) for cfg in configs]
    names = [cfg.name for cfg in configs]
    name = "union:" + "+".join(names)
    # a part's own validation images (a val/ folder) are not test images: the pool has them too
    train = joined([s for p in parts for s in (p.train, p.val)], [n for n in names for _ in "tv"], name)
    if train is None:
        raise DataError(f"{name}: no training images")
    test = joined([p.test for p in parts], names, name)
    if test is not None and test.image_shape != train.image_shape:
        raise DataError(f"{name}: test images are {test.image_shape}, training images "
                        f"{train.image_shape} (set data.image_size)")
    return Splits(train=train, test=test)
