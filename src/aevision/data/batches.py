"""Mini-batches straight from in-memory tensors: no per-sample indexing, no worker processes.

For data already in memory a ``DataLoader`` costs more than the model on small autoencoders: it
indexes one sample at a time and collates. Here a batch is one gather on a uint8 tensor and one
conversion to float. The order is a function of (seed, epoch) alone, so a resumed run sees the
same batches. Under data parallelism with W ranks each global batch of W x batch_size images is
the one a single process with that batch size would draw, split in W slices: DDP then averages
exactly the gradient of the single-process run, and the loss curves agree.

With ``targets`` (per-sample labels or masks, gathered with the same indices and yielded as
stored), a batch is the pair ``(x, y)``; the Trainer then calls ``model(x, y)``.

``epoch_size`` sizes an epoch by samples instead of by the data: a set smaller than that is cycled
(one fresh shuffle after another, so every sample is drawn before any is drawn again), a larger one
sampled (the first ``epoch_size`` of the epoch's shuffle). Ten masks then still give an epoch of
hundreds of images, and a set smaller than one batch more than one step per epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

import torch
from torch import Tensor

from aevision.data.imageset import as_float, to_float
from aevision.data.splits import permutation


class Batches(Protocol):
    """What the Trainer reads batches from: :class:`TensorBatches` (in memory) or
    :class:`aevision.data.streaming.StreamBatches` (streamed chunks)."""

    batch_size: int
    drop_last: bool
    channels_last: bool
    images_per_item: int

    def num_batches(self, world_size: int = 1) -> int: ...

    def shard_size(self, world_size: int = 1) -> int: ...

    def to(self, device: torch.device | str) -> Any: ...

    def epoch(self, epoch: int, rank: int = 0, world_size: int = 1,
              start: int = 0) -> Iterator[Tensor | tuple[Tensor, Tensor]]: ...


class TensorBatches:
    """Batches of ``data`` ((N, ...) uint8 images or clips, or floats already in [0, 1]) as float32
    in [0, 1].

    ``transform`` maps each batch to the batch used (with ``targets``: ``(x, y) -> (x, y)``, so
    geometric augmentations move images and masks together).

    uint8 data whose float32 copy takes at most ``float_cache_mb`` is converted once, on the first
    epoch: a batch is then one gather, as in a hand-written loop over a float tensor (on small
    models the per-batch conversion is 3-5% of a step). Larger data stays uint8 (4x less memory).
    """

    def __init__(
        self,
        data: Tensor,
        batch_size: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = False,
        transform: Callable[..., Any] | None = None,
        channels_last: bool = False,
        targets: Tensor | None = None,
        float_cache_mb: float = 256.0,
        epoch_size: int | None = None,
    ):
        if targets is not None and len(targets) != len(data):
            raise ValueError(f"TensorBatches: {len(targets)} targets for {len(data)} samples")
        self.data = data
        self.targets = targets
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        if epoch_size is not None and epoch_size < 1:
            raise ValueError(f"TensorBatches: epoch_size must be >= 1, got {epoch_size}")
        self.epoch_size = epoch_size
        self._drop_last = drop_last
        self.transform = transform
        self.channels_last = channels_last
        self.float_cache_mb = float_cache_mb
        self._floats: Tensor | None = None

    def __len__(self) -> int:
        return self.num_batches()

    @property
    def size(self) -> int:
        """Samples per epoch: ``epoch_size``, or the whole data."""
        return self.epoch_size if self.epoch_size is not None else len(self.data)

    @property
    def drop_last(self) -> bool:
        """Drop a last partial batch, except when an epoch is smaller than one batch (a small set
        still trains)."""
        return self._drop_last and self.size > self.batch_size

    @property
    def images_per_item(self) -> int:
        """T for clips ((N, T, C, H, W) data), else 1: throughput is counted in images."""
        shape = tuple(self.data.shape)
        return int(shape[1]) if len(shape) == 5 else 1

    def to(self, device: torch.device | str) -> TensorBatches:
        """Move the whole uint8 tensor to ``device`` once (GPU training: no host transfers)."""
        self.data = self.data.to(device)
        self._floats = None
        if self.targets is not None:
            self.targets = self.targets.to(device)
        return self

    def shard_size(self, world_size: int = 1) -> int:
        return self.size // world_size if world_size > 1 else self.size

    def num_batches(self, world_size: int = 1) -> int:
        n = self.shard_size(world_size)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def indices(self, epoch: int, rank: int = 0, world_size: int = 1) -> Tensor:
        """This rank's sample order for ``epoch``: slice ``rank`` of every global batch."""
        return epoch_order(len(self.data), self.batch_size, self.seed, epoch, self.shuffle, rank,
                           world_size, self.size)


    def epoch(self, epoch: int, rank: int = 0, world_size: int = 1,
              start: int = 0) -> Iterator[Tensor | tuple[Tensor, Tensor]]:
        """Yield the batches of ``epoch`` from batch number ``start`` on (for resuming): ``x``, or
        ``(x, targets)`` when there are targets."""
        order = self.indices(epoch, rank, world_size).to(self.data.device)
        floats = self.float_data()
        for b in range(start, self.num_batches(world_size)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            batch = rows(floats, idx) if floats is not None else as_float(rows(self.data, idx))
            if self.targets is None:
                if self.transform is not None:
                    batch = self.transform(batch)
                yield self._layout(batch)
            else:
                y = rows(self.targets, idx)
                if self.transform is not None:
                    batch, y = self.transform(batch, y)
                yield self._layout(batch), y

    def float_data(self) -> Tensor | None:
        """The whole data as float32 in [0, 1] when it is small enough (see the class notes)."""
        if self._floats is None and isinstance(self.data, Tensor) and self.data.dtype == torch.uint8 \
                and self.data.numel() * 4 <= self.float_cache_mb * 2**20:  # not ClipWindows (views)
            self._floats = to_float(self.data)
        return self._floats

    def _layout(self, batch: Tensor) -> Tensor:
        if self.channels_last and batch.dim() == 4:
            return batch.contiguous(memory_format=torch.channels_last)
        return batch


def rows(data: Any, idx: Tensor) -> Tensor:
    """``data[idx]`` along the first dimension. For a tensor, ``index_select``: it copies whole rows,
    where advanced indexing runs a generic gather kernel element by element (a batch of 256 MNIST
    images: 0.10 ms against 0.55, a sixth of a small dense model's whole training step)."""
    return data.index_select(0, idx) if isinstance(data, Tensor) else data[idx]


def epoch_order(n: int, batch_size: int, seed: int, epoch: int, shuffle: bool = True, rank: int = 0,
                world_size: int = 1, size: int | None = None) -> Tensor:
    """Rank ``rank``'s sample order over ``n`` samples in ``epoch`` (seeded): ``size`` samples
    (default ``n``; more cycle through fresh shuffles, one after another), then slice ``rank`` of
    every global batch of ``world_size`` x ``batch_size``, each rank ``size // world_size``."""
    size = n if size is None else size
    passes = -(-size // n) if n else 1
    order = torch.cat([permutation(n, seed, 1000 + epoch, *((k,) if k else ())) if shuffle
                       else torch.arange(n) for k in range(passes)])[:size]
    if world_size > 1:
        per = size // world_size
        global_batch = batch_size * world_size
        full, rest = divmod(per * world_size, global_batch)
        head = order[:full * global_batch].view(full, world_size, batch_size)[:, rank]
        # the last, partial global batch is split evenly too
        tail = order[full * global_batch:per * world_size].view(world_size, -1)[rank] \
            if rest else order[:0]
        order = torch.cat([head.reshape(-1), tail])
    return order
