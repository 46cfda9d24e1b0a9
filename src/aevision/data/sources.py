"""One image set from one word on the command line: a file, a folder, or a dataset name.

Commands that take "the gallery" or "the normal images" accept either a path or a registered
dataset (``mnist``, ``folder:PATH``). A :class:`SourceSpec` records which, so that a saved index
can reload exactly the same images later (to draw thumbnails), and a fingerprint of the pixels
says whether they are still the same images.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import torch

from aevision.data.imageset import ImageSet
from aevision.data.splits import Carve, limited
from aevision.errors import AevisionError, ConfigError
from aevision.io import user_path

Split = Literal["train", "val", "test"]


@dataclass(frozen=True)
class SourceSpec:
    """``data``: a path (file or folder) or a dataset name; the rest only applies to datasets,
    except ``limit``: a folder's first N images (in sorted file order, as everywhere), a dataset's N
    drawn with ``seed`` (see :func:`~aevision.data.splits.limited`). ``carve`` takes split ``val``
    from the training images as a model's pretraining did (see
    :func:`~aevision.models.io.pretraining_carve`; default: 10% held out with ``seed``)."""

    data: str
    split: Split = "train"
    root: str | None = None
    seed: int = 0
    limit: int | None = None
    carve: Carve | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SourceSpec:
        spec = cls(**{k: d[k] for k in ("data", "split", "root", "seed", "limit") if k in d})
        return replace(spec, carve=Carve(*d["carve"])) if d.get("carve") else spec  # a JSON list


def is_path(data: str) -> bool:
    return user_path(data).exists()


def resolved(data: str) -> str:
    """A path made absolute (so a saved spec still finds it from elsewhere); a dataset name as is."""
    return str(user_path(data).resolve()) if is_path(data) else data


def load_source(spec: SourceSpec, channels: int, image_size: tuple[int, int]) -> ImageSet:
    """The images of ``spec``, converted to ``channels`` and resized to ``image_size``.

    A dataset's ``train`` split is the whole official training set (no validation carved out)
    unless ``split`` is ``val``: the images that ``pretrain`` holds out (``spec.carve``).
    """
    from aevision.config import DataConfig
    from aevision.data.folder import load_path
    from aevision.data.registry import DATASETS, load_dataset

    if spec.limit is not None and spec.limit < 1:
        raise ConfigError("--limit", spec.limit, "a positive integer")
    path = user_path(spec.data)
    from_files = path.is_dir() or path.is_file()
    if from_files:
        data = load_path(path.resolve(), channels, image_size)
    else:
        name = spec.data.partition(":")[0]
        if name not in DATASETS:
            raise AevisionError(f"{spec.data}: no such file or folder, and not a dataset "
                                f"(datasets: {', '.join(DATASETS.names())})")
        carve = spec.carve or Carve(DataConfig.val_fraction, spec.seed)  # pretrain's default
        val = spec.split == "val"
        cfg = DataConfig(name=spec.data, root=spec.root, channels=channels, image_size=list(image_size),
                         val_fraction=carve.fraction if val else 0.0, limit=carve.limit if val else None,
                         options=dict(carve.options or {}))
        data = getattr(load_dataset(cfg, carve.seed if val else spec.seed), spec.split)
        if data is None:
            raise AevisionError(f"--split {spec.split}: dataset {spec.data!r} has no {spec.split} split")
    if spec.limit is None or spec.limit >= len(data):
        return data
    # files: the first N, as every command reads files; a dataset's N: drawn (class-ordered splits)
    return data.subset(range(spec.limit) if from_files else limited(len(data), spec.limit, spec.seed))


def fingerprint(*tensors: torch.Tensor | None) -> str:
    """SHA-256 of tensors' contents and shapes (and dtypes other than uint8; None counts as
    absent): equal only for the very same images (labels, masks, weights). Hashes the memory
    without copying it. One uint8 tensor hashes as it always has (an index's ``gallery_sha256``)."""
    h = hashlib.sha256()
    for t in tensors:
        if t is None:
            h.update(b"none")
            continue
        t = t.detach().cpu().contiguous()
        h.update(str(tuple(t.shape)).encode() + (b"" if t.dtype == torch.uint8 else str(t.dtype).encode()))
        h.update(t.reshape(-1).view(torch.uint8).numpy())  # the raw bytes, whatever the dtype (bf16 too)
    return h.hexdigest()
