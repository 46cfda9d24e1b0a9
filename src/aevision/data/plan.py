"""In memory or streamed: the data path picks itself from the decoded size and ``data.memory``.

A dataset whose decoded training images fit the budget is read into one uint8 tensor
(:class:`TensorBatches`: the fastest batches there are); a larger one is streamed
(:class:`StreamBatches`) from prepared chunks (``shards:PATH``). The budget is ``data.memory``
GiB, by default a quarter of the machine's RAM: a decoded set is held once more while it is
built, and every training process (DDP) holds its own copy. The choice is logged with the
numbers it was made from.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from aevision.config import DataConfig
from aevision.data.folder import split_folders
from aevision.data.folder_stream import FolderListing, list_folder
from aevision.data.shards import ShardInfo, read_info
from aevision.io import user_path

log = logging.getLogger(__name__)
DEFAULT_FRACTION = 0.25
GIB = 2**30


def total_memory_bytes() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # not POSIX: assume 8 GiB
        return 8 * GIB


def memory_budget(cfg: DataConfig) -> tuple[int, str]:
    """Bytes the decoded training set may take, and where that number came from."""
    if cfg.memory is not None:
        return int(cfg.memory * GIB), "data.memory"
    total = total_memory_bytes()
    return int(total * DEFAULT_FRACTION), f"data.memory default: 1/4 of {total / GIB:.1f} GiB RAM"


def human_bytes(n: int) -> str:
    return f"{n / GIB:.2f} GiB" if n >= GIB else f"{n / 2**20:.1f} MiB"


@dataclass(frozen=True)
class Plan:
    """How ``pretrain`` reads its data: ``stream`` set means streamed from those shards or files."""

    decoded_bytes: int | None
    budget_bytes: int
    stream: ShardInfo | FolderListing | None = None

    @property
    def streamed(self) -> bool:
        return self.stream is not None


def plan_data(cfg: DataConfig) -> Plan:
    """In memory unless ``cfg.name`` is ``shards:PATH`` or ``folder:PATH`` whose decoded training
    images exceed the budget (other datasets are small by nature: generated or downloaded sets).
    A folder laid out as its own splits (``train/`` + ``test/``) is sized, and streamed, by ``train/``."""
    budget, why = memory_budget(cfg)
    name, _, argument = cfg.name.partition(":")
    if name not in ("shards", "folder") or not argument or \
            (name == "folder" and not user_path(argument).is_dir()):  # archives: in memory
        return Plan(None, budget)
    found: ShardInfo | FolderListing
    splits = None  # a folder's own splits (train/ + test/): train on train/
    if name == "shards":
        found = read_info(argument)
        size = found.decoded_bytes("train")
    else:
        root = user_path(argument).resolve()
        splits = split_folders(root)
        found = list_folder(splits["train"] if splits else root, cfg.channels, cfg.image_size, cfg.strict)
        size = found.decoded_bytes()
    streamed = size > budget
    if streamed and splits and "val" in splits:
        log.info("data: %s is streamed from train/; validation is carved from it (val_fraction), "
                 "not read from val/", cfg.name)
    log.info("data: %s decoded %s %s the budget of %s (%s): %s", cfg.name, human_bytes(size),
             ">" if streamed else "<=", human_bytes(budget), why,
             f"streaming with {cfg.workers} loader processes" if streamed else "reading it into memory")
    return Plan(size, budget, found if streamed else None)
