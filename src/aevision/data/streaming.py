"""Batches streamed from prepared chunks (``shards:PATH``): the Trainer's batches contract
(:class:`aevision.data.batches.TensorBatches`) for data larger than memory.

litdata's ``StreamingDataset`` reads the chunks (a local folder or object storage, chunks
downloaded ahead and evicted), shuffles chunks then items within them per epoch, and gives each
DDP rank (and each of its ``workers`` loader processes) disjoint chunks; its
``StreamingDataLoader`` batches there. Here a batch is the (B, C, H, W) uint8 images turned into
float32 in [0, 1] in the training process, then the batch ``transform`` (augmentation stays
batched on tensors), as with in-memory data.

The order is a function of (seed, epoch, ranks, workers, batch size) alone, so a run resumed at
batch ``start`` of an epoch asks litdata to replay from there (the loader's own state dict,
rebuilt from those numbers): the remaining batches are exactly those the uninterrupted run saw.
Every rank yields the same number of batches (litdata's ``drop_last`` under DDP), so collective
steps never wait on a rank that ran out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Literal

import torch
from torch import Tensor

from aevision.data.imageset import to_float
from aevision.errors import DataError

Target = Literal["label", "mask"]


class StreamBatches:
    """Batches of one prepared split (``path``: a litdata folder or URL) as float32 in [0, 1].

    ``targets``: ``"label"`` or ``"mask"`` makes a batch the pair ``(x, y)``. ``workers``: loader
    processes per rank (0: read in the training process).
    """

    def __init__(self, path: str, batch_size: int, *, seed: int = 0, shuffle: bool = True,
                 drop_last: bool = False, transform: Callable[..., Any] | None = None,
                 channels_last: bool = False, targets: Target | None = None, workers: int = 0,
                 cache_dir: str | None = None):
        self.path = path
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.transform = transform
        self.channels_last = channels_last
        self.targets = targets
        self.workers = workers
        self.cache_dir = cache_dir
        self.device: torch.device | None = None
        self.images_per_item = 1
        self._counts: dict[tuple[int, int], int] = {}

    def __len__(self) -> int:
        return self.num_batches()

    def to(self, device: torch.device | str) -> StreamBatches:
        """Batches go to ``device`` as they are read (nothing is held there)."""
        self.device = torch.device(device)
        return self

    def num_batches(self, world_size: int = 1) -> int:
        key = (world_size, self.batch_size)  # the batch size may change (train.auto_batch_size)
        if key not in self._counts:
            self._counts[key] = len(self._loader(0, 0, world_size))
        return self._counts[key]

    def shard_size(self, world_size: int = 1) -> int:
        """Images this rank sees in an epoch (at most; the last batch may be partial)."""
        return self.num_batches(world_size) * self.batch_size

    def epoch(self, epoch: int, rank: int = 0, world_size: int = 1,
              start: int = 0) -> Iterator[Tensor | tuple[Tensor, Tensor]]:
        """Yield this rank's batches of ``epoch`` from batch number ``start`` on."""
        loader = self._loader(epoch, rank, world_size)
        if start:
            loader.load_state_dict(resume_state(loader, epoch, start))
        for raw in _reading(loader, self.path):
            yield self._batch(raw)

    def raw_epoch(self, epoch: int = 0, rank: int = 0, world_size: int = 1) -> Iterator[dict[str, Any]]:
        """The collated records (``index``, ``image``, ``label``, ``file``, ...) as stored."""
        yield from _reading(self._loader(epoch, rank, world_size), self.path)

    def _batch(self, raw: dict[str, Any]) -> Tensor | tuple[Tensor, Tensor]:
        x = raw["image"]
        if self.device is not None:
            x = x.to(self.device, non_blocking=True)
        x = to_float(x)
        if self.targets is None:
            x = self.transform(x) if self.transform is not None else x
            return self._layout(x)
        y = raw[self.targets]
        y = y.long() if self.targets == "label" else y
        if self.device is not None:
            y = y.to(self.device, non_blocking=True)
        if self.transform is not None:
            x, y = self.transform(x, y)
        return self._layout(x), y

    def _layout(self, batch: Tensor) -> Tensor:
        if self.channels_last and batch.dim() == 4:
            return batch.contiguous(memory_format=torch.channels_last)
        return batch

    def _loader(self, epoch: int, rank: int, world_size: int) -> Any:
        """A fresh litdata loader placed at the start of ``epoch`` for ``rank`` of ``world_size``."""
        from litdata import StreamingDataLoader, StreamingDataset
        from litdata.utilities.env import _DistributedEnv

        try:
            ds = StreamingDataset(self.path, cache_dir=self.cache_dir, shuffle=self.shuffle,
                                  drop_last=self.drop_last or world_size > 1, seed=self.seed)
        except (ValueError, FileNotFoundError, OSError) as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise DataError(f"shards:{self.path}: cannot open the chunks ({first})") from None
        env = _DistributedEnv.detect()
        if (env.world_size, env.global_rank) != (world_size, rank):  # not launched by torch.distributed
            env = _DistributedEnv(world_size, rank, 1)
        ds.distributed_env = env
        # its own generator: a loader draws its workers' base seed when it starts an epoch, which
        # from the global RNG would shift the training noise (denoising, dropout) of a resumed run
        loader = StreamingDataLoader(ds, batch_size=self.batch_size, num_workers=self.workers,
                                     persistent_workers=False, generator=own_generator(self.seed, epoch))
        loader.current_epoch = epoch  # its __iter__ counts one up: litdata's epochs start at 1
        return loader


def own_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def resume_state(loader: Any, epoch: int, start: int) -> dict[str, Any]:
    """The state litdata's loader would have saved after ``start`` batches of ``epoch``."""
    ds, bs, workers = loader.dataset, loader.batch_size, loader.num_workers
    yielded = start * bs
    ds.current_epoch = epoch + 1
    state = ds.state_dict(yielded, workers, bs)
    return {"dataset": state, "current_epoch": epoch + 1, "num_samples_yielded": yielded,
            "latest_worker_idx": (start - 1) % max(1, workers)}


def _reading(loader: Any, path: str) -> Iterator[dict[str, Any]]:
    """The loader's batches; a damaged chunk is a one-line error naming the dataset and the cause."""
    it = iter(loader)
    while True:
        try:
            raw = next(it)
        except StopIteration:
            return
        except (RuntimeError, ValueError, OSError, KeyError, EOFError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DataError(f"shards:{path}: cannot read a chunk ({first[:300]})") from None
        yield raw
