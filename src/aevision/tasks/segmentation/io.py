"""Saving and loading segmenters: ``model.safetensors`` + ``config.json``, like autoencoders.

``config.json`` has a ``segmenter`` section (encoder architecture, decoder widths, classes,
palette, input size) from which :func:`load_segmenter` rebuilds the network before loading the
weights strictly; no pickle anywhere.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from aevision.errors import AevisionError
from aevision.io import write_json, write_safetensors
from aevision.models.io import CONFIG, WEIGHTS, check_format, load_weights_strict, read_saved_config
from aevision.tasks.segmentation.model import Segmenter, segmenter_from_spec

FORMAT = 1


def save_segmenter(seg: Segmenter, folder: str | os.PathLike[str],
                   extra: dict[str, Any] | None = None) -> Path:
    """Write ``folder/model.safetensors`` and ``folder/config.json`` (each atomically)."""
    from aevision.provenance import __version__

    folder = Path(folder)
    config = {"format": FORMAT, "aevision_version": __version__, "segmenter": seg.spec, **(extra or {})}
    write_safetensors(folder / WEIGHTS, seg.state_dict(),
                      metadata={"format": "aevision-segmenter", "version": str(FORMAT)})
    write_json(folder / CONFIG, config)
    return folder


def load_segmenter(path: str | os.PathLike[str], device: str = "cpu") -> Segmenter:
    """A saved segmenter (run folder or its ``model.safetensors``), eval mode."""
    folder, weights, config = read_saved_config(path, "segmenter")
    spec = config.get("segmenter") if isinstance(config, dict) else None
    if not isinstance(spec, dict):
        hint = " (it is an autoencoder from 'aevision pretrain')" if isinstance(config, dict) \
            and "model" in config else ""
        raise AevisionError(f"{folder / CONFIG}: not a segmenter from 'aevision segment'{hint}")
    check_format(config, folder / CONFIG, FORMAT)
    try:
        seg = segmenter_from_spec(spec)
    except (KeyError, TypeError) as e:
        raise AevisionError(f"{folder / CONFIG}: incomplete segmenter section ({e})") from None
    load_weights_strict(seg, weights, folder / CONFIG)
    return seg.to(device).eval()
