"""Batches decoded from a plain image folder as they are needed, in loader processes: streaming
for users who will not ``prepare``.

The order is :func:`aevision.data.batches.epoch_order` over the folder's files, exactly as
in-memory batches would draw them (seeded per epoch; under DDP slice ``rank`` of each global
batch), and batch ``b`` of an epoch is decoded by loader process ``b % workers``, so that the
loader, which takes batches from its processes in turn, yields them in order. Resuming at batch
``start`` starts there: nothing before it is read. JPEGs are decoded by
``torchvision.io.decode_jpeg`` (libjpeg-turbo, no Pillow objects), other formats by
``decode_image``; an image of another size is resized (bilinear, antialiased) to the listing's.
A file that does not decode is left out of its batch and counted in a warning.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from aevision.data.batches import epoch_order
from aevision.data.folder_stream import FolderListing, check_size
from aevision.data.imageset import Skipped, to_float
from aevision.data.streaming import own_generator
from aevision.errors import DataError

log = logging.getLogger(__name__)


def decode_file(path: Path, listing: FolderListing,
                resized: list[tuple[int, int]] | None = None) -> Tensor | None:
    """One file of ``listing`` -> (channels, H, W) uint8 at its size, or None when it does not
    decode; an image of another size is resized (its size appended to ``resized``), or an error
    when the listing says so."""
    from torchvision.io import ImageReadMode, decode_image, decode_jpeg, read_file

    mode = ImageReadMode.GRAY if listing.channels == 1 else ImageReadMode.RGB
    try:
        data = read_file(str(path))
        jpeg = path.suffix.lower() in (".jpg", ".jpeg")
        image = decode_jpeg(data, mode=mode) if jpeg else decode_image(data, mode=mode)
    except (RuntimeError, ValueError, OSError):
        return None
    if tuple(image.shape[1:]) != listing.size:
        if listing.other_size is not None:
            check_size(path, image, listing)
        if resized is not None:
            resized.append((int(image.shape[1]), int(image.shape[2])))
        x = F.interpolate(image[None].float(), size=listing.size, mode="bilinear", antialias=True,
                          align_corners=False)
        image = x[0].round().clamp(0, 255).to(torch.uint8)
    return image


class _EpochFiles(IterableDataset):
    """The batches ``start``.. of one epoch's order, each decoded by its loader process."""

    def __init__(self, listing: FolderListing, order: Tensor, batch_size: int, batches: int, start: int):
        self.listing, self.order, self.batch_size = listing, order, batch_size
        self.batches, self.start = batches, start

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for b in range(self.start + worker, self.batches, workers):
            idx = self.order[b * self.batch_size:(b + 1) * self.batch_size].tolist()
            yield self._batch(idx)

    def _batch(self, idx: Sequence[int]) -> dict[str, Any]:
        listing = self.listing
        images, kept, bad, resized = [], [], [], []
        for i in idx:
            try:
                image = decode_file(listing.files[i], listing, resized)
            except DataError as e:  # handed to the training process: one line there, not a traceback
                return {"error": str(e)}
            if image is None:
                bad.append(str(listing.files[i]))
            else:
                images.append(image)
                kept.append(i)
        labels = [listing.labels[i] for i in kept] if listing.labels is not None else [-1] * len(kept)
        c, h, w = listing.image_shape
        return {"image": torch.stack(images) if images else torch.empty(0, c, h, w, dtype=torch.uint8),
                "index": torch.tensor(kept, dtype=torch.long), "label": torch.tensor(labels), "bad": bad,
                "resized": resized}


class FolderBatches:
    """The Trainer's batches contract over ``listing.files[indices]``, decoded on the fly."""

    def __init__(self, listing: FolderListing, indices: Sequence[int], batch_size: int, *, seed: int = 0,
                 shuffle: bool = True, drop_last: bool = False, transform: Callable[..., Any] | None = None,
                 workers: int = 0):
        self.listing = listing
        self.subset = torch.as_tensor(list(indices), dtype=torch.long)
        self.batch_size, self.seed, self.shuffle = batch_size, seed, shuffle
        self.drop_last = drop_last and len(self.subset) > batch_size
        self.transform, self.workers = transform, workers
        self.channels_last = False
        self.images_per_item = 1
        self.device: torch.device | None = None
        self.skipped: list[Skipped] = []  # files that did not decode, as they were met
        self.resized: Counter[tuple[int, int]] = Counter()  # (H, W) of the images resized -> count

    def __len__(self) -> int:
        return self.num_batches()

    def to(self, device: torch.device | str) -> FolderBatches:
        self.device = torch.device(device)
        return self

    def shard_size(self, world_size: int = 1) -> int:
        return len(self.subset) // world_size if world_size > 1 else len(self.subset)

    def num_batches(self, world_size: int = 1) -> int:
        n = self.shard_size(world_size)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def raw_epoch(self, epoch: int, rank: int = 0, world_size: int = 1,
                  start: int = 0) -> Iterator[dict[str, Any]]:
        """The decoded batches as records: ``image`` (B, C, H, W) uint8, ``index``, ``label``."""
        order = self.subset[epoch_order(len(self.subset), self.batch_size, self.seed, epoch, self.shuffle,
                                        rank, world_size)]
        data = _EpochFiles(self.listing, order, self.batch_size, self.num_batches(world_size), start)
        workers = min(self.workers, max(0, self.num_batches(world_size) - start))
        # its own generator: drawing the workers' base seed from the global RNG would shift the
        # training noise of a resumed run
        generator = own_generator(self.seed, epoch)
        for raw in DataLoader(data, batch_size=None, num_workers=workers, generator=generator):
            if "error" in raw:
                raise DataError(raw["error"])
            self.resized.update((int(h), int(w)) for h, w in raw.get("resized", []))  # lists after the loader
            if raw["bad"]:
                self.skipped += [Skipped(path, "not a readable image") for path in raw["bad"]]
                log.warning("skipped %d unreadable file(s), e.g. %s (%d so far)", len(raw["bad"]),
                            raw["bad"][0], len(self.skipped))
            yield raw

    def epoch(self, epoch: int, rank: int = 0, world_size: int = 1,
              start: int = 0) -> Iterator[Tensor | tuple[Tensor, Tensor]]:
        for raw in self.raw_epoch(epoch, rank, world_size, start):
            x = raw["image"].to(self.device) if self.device is not None else raw["image"]
            x = to_float(x)
            if self.transform is not None:
                x = self.transform(x)
            yield x.contiguous(memory_format=torch.channels_last) if self.channels_last else x
