"""The training data of a streamed ``pretrain``: batches, the run key's data part, the summary.

``pretrain`` streams when :func:`aevision.data.plan.plan_data` says the decoded training set
exceeds ``data.memory``: from prepared shards (:class:`StreamBatches`; validation is the split
``prepare`` carved) or from a plain folder (:class:`FolderBatches`; validation carved here,
seeded, as the in-memory path carves it).
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import torch

from aevision.config import VAL_BATCH_SIZE, PretrainConfig
from aevision.data import Splits
from aevision.data.augment import Augment
from aevision.data.batches import Batches
from aevision.data.folder_batches import FolderBatches
from aevision.data.folder_stream import FolderListing
from aevision.data.shards import ShardInfo, data_fingerprint
from aevision.data.sources import fingerprint
from aevision.data.splits import train_val_indices
from aevision.data.streaming import StreamBatches
from aevision.errors import ConfigError

Stream = ShardInfo | FolderListing


def data_key(splits: Splits | None, stream: Stream | None) -> str:
    """What makes two runs' data the same: the pixels in memory, the streamed shards' indexes, or
    the streamed folder's files (names, sizes, modification times)."""
    if isinstance(stream, ShardInfo):
        return data_fingerprint(stream)
    if isinstance(stream, FolderListing):
        h = hashlib.sha256(repr((stream.image_shape, stream.classes)).encode())
        for f in stream.files:
            st = os.stat(f)
            h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return h.hexdigest()
    assert splits is not None
    return fingerprint(splits.train.images, splits.val.images if splits.val is not None else None)


def streamed_batches(cfg: PretrainConfig, stream: Stream) -> tuple[Batches, Batches | None]:
    """Shuffled training batches (augmented when configured) and validation batches in order."""
    check_streamable(cfg, stream)
    bs, seed = cfg.train.batch_size, cfg.seed
    augment = Augment(cfg.augment) if cfg.augment.active else None
    val_bs = max(bs, VAL_BATCH_SIZE)
    if isinstance(stream, ShardInfo):
        train = StreamBatches(stream.split_path("train"), bs, seed=seed, shuffle=True, drop_last=True,
                              transform=augment, workers=cfg.data.workers)
        val = (StreamBatches(stream.split_path("val"), val_bs, shuffle=False)
               if stream.counts.get("val") else None)
        return train, val
    n = len(stream.files)
    labels = None if stream.labels is None else torch.tensor(stream.labels)
    split = train_val_indices(n, labels, cfg.data.val_fraction, seed)
    train_idx, val_idx = (split[0].tolist(), split[1].tolist()) if split is not None else (range(n), [])
    train_b = FolderBatches(stream, train_idx, bs, seed=seed, drop_last=True, transform=augment,
                            workers=cfg.data.workers)
    val_b = (FolderBatches(stream, val_idx, val_bs, shuffle=False, workers=cfg.data.workers)
             if val_idx else None)
    return train_b, val_b


def check_streamable(cfg: PretrainConfig, stream: Stream) -> None:
    """Settings a streamed set cannot honour are errors naming them, not silently ignored."""
    d = cfg.data
    if isinstance(stream, ShardInfo):
        fix = "set when preparing (aevision prepare --image-size/--channels)"
        if d.image_size is not None and tuple(d.image_size) != stream.image_shape[1:]:
            expected = f"null or {list(stream.image_shape[1:])}: {fix}"
            raise ConfigError("data.image_size", d.image_size, expected)
        if d.channels is not None and d.channels != stream.image_shape[0]:
            raise ConfigError("data.channels", d.channels, f"null or {stream.image_shape[0]}: {fix}")
    if d.limit is not None:
        raise ConfigError("data.limit", d.limit, "null when streaming (prepare a smaller set instead)")
    if d.clip_length is not None:
        raise ConfigError("data.clip_length", d.clip_length, "null: a streamed set holds single images")


def stream_summary(stream: Stream) -> dict[str, Any]:
    """``data_summary`` of a streamed set: counts from the shards' manifest or the folder's listing."""
    shape = list(stream.image_shape)
    labelled = bool(stream.classes)
    if isinstance(stream, ShardInfo):
        counts, name = stream.counts, f"shards:{stream.path}"
    else:
        counts, name = {"train": len(stream.files)}, f"folder:{stream.root}"
    one = {split: {"images": n, "image_shape": shape, "labelled": labelled} for split, n in counts.items()}
    skipped = [] if isinstance(stream, ShardInfo) else [{"path": s.path, "reason": s.reason}
                                                         for s in stream.skipped]
    return {"name": name, "streamed": True, "train": one.get("train"), "val": one.get("val"),
            "test": one.get("test"), "classes": stream.classes, "skipped_files": skipped}
