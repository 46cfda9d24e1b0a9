"""What an export starts from: the trained network in a run folder, and real images to check it on.

A run folder of ``aevision pretrain`` holds an autoencoder (a ``codec`` when it has an entropy
model), one of ``aevision segment`` a segmenter; ``config.json`` says which. The real images are
the ones given (files or folders), or else the held-out images of the data the run was trained
on, exactly as it split them (``config.json`` records the dataset, its options and the seed):
an autoencoder's validation split, a segmenter's test split.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from aevision.config import DataConfig, from_dict
from aevision.data import load_dataset
from aevision.data.inputs import file_inputs
from aevision.data.segmentation import load_segmentation
from aevision.data.splits import limited
from aevision.errors import AevisionError
from aevision.models.base import Autoencoder
from aevision.models.io import load_model, read_saved_config, saved_run
from aevision.tasks.export.graphs import entropy_of
from aevision.tasks.segmentation.io import load_segmenter


def load_exportable(path: str | os.PathLike[str]) -> tuple[nn.Module, str]:
    """(the network in eval mode on CPU, its kind: 'autoencoder', 'codec' or 'segmenter')."""
    _, _, config = read_saved_config(path, "model")
    if isinstance(config, dict) and "segmenter" in config:
        return load_segmenter(path), "segmenter"
    model = load_model(path)
    return model, "codec" if entropy_of(model) is not None else "autoencoder"


def real_images(path: str | os.PathLike[str], model: Any, inputs: Sequence[str] | None, limit: int,
                fit: Any = None, data_root: str | None = None) -> tuple[Tensor, str]:
    """(``limit`` real images, (N, C, H, W) uint8 at the model's size; what they are): the first
    ``inputs`` files, or a seeded draw from the run's own data."""
    c, h, w = model.input_shape
    if inputs:
        found = file_inputs(list(inputs), c, (h, w), fit=fit, limit=limit)
        return found.data.images, f"{len(found.data)} images from {', '.join(map(str, inputs))}"
    run, seed = saved_run(path)
    data = run.get("data")
    if not isinstance(data, dict):
        raise AevisionError(f"{path}: config.json records no training data; give the images to check "
                            f"the export on (--inputs IMAGES)")
    cfg = from_dict(DataConfig, data, "data")
    cfg.root = data_root or cfg.root
    cfg.channels, cfg.image_size, cfg.clip_length, cfg.clip_stride = c, [h, w], None, None
    if isinstance(model, Autoencoder):
        splits = load_dataset(cfg, seed)
        split, images = next((n, s) for n, s in (("validation", splits.val), ("test", splits.test),
                                                 ("training", splits.train)) if s is not None and len(s))
    else:
        segs = load_segmentation(cfg, seed)
        split, images = next((n, s) for n, s in (("test", segs.test), ("validation", segs.val),
                                                 ("training", segs.train)) if s is not None and len(s))
    chosen = images.images[limited(len(images.images), limit, seed)]  # a video's: frames, not sequences
    return chosen, f"{len(chosen)} images of the {split} split of {cfg.name} (the run's own data)"
