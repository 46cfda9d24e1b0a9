"""A folder of images read file by file, never whole: for ``prepare`` and for streaming.

``folder:PATH`` decodes every image into one tensor; a folder larger than memory is instead
listed once (:func:`list_folder`: files, labels, channels, the size images are brought to) and
decoded a block of files at a time (:func:`decode_blocks`), in threads (Pillow releases the GIL).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from torch import Tensor

from aevision.data import loading
from aevision.data.folder import scan_folder
from aevision.data.images import BadImage, decode_many, load_sized
from aevision.data.imageset import Skipped
from aevision.errors import DataError


@dataclass
class FolderListing:
    """The images of a folder, not yet decoded: ``size`` (H, W) is what every one is brought to."""

    root: Path
    files: list[Path]
    labels: list[int] | None
    classes: list[str] | None
    channels: int
    size: tuple[int, int]
    skipped: list[Skipped] = field(default_factory=list)
    # None: an image of another size is stretched to ``size``; else it is an error, and this says why
    # and what to do (the sentence after "FILE: a HxW image; ")
    other_size: str | None = None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.channels, *self.size)

    def decoded_bytes(self) -> int:
        c, h, w = self.image_shape
        return len(self.files) * c * h * w


def list_folder(root: Path, channels: int | None, image_size: Sequence[int] | None,
                strict: bool = False, *, exact: str | None = None) -> FolderListing:
    """List ``root`` as ``folder:`` does (class subfolders label it). With ``image_size`` every
    image is stretched to it, unless ``exact`` says why an image of another size is an error;
    without, the first readable image sets the size and an image of another size is an error, as
    when the folder is read whole."""
    files, labels, classes, skipped = scan_folder(root)
    label_of = dict(zip(files, labels or [None] * len(files), strict=True))
    keep = loading.with_image_suffix(files, skipped)
    loading.stop_if_strict(skipped, strict)
    if not keep:
        raise DataError(f"folder:{root}: no image files found{loading.skipped_example(skipped)}")
    channels = channels or loading.guess_channels(keep)
    if image_size:
        size, other = (int(image_size[0]), int(image_size[1])), exact
    else:
        size = first_size(keep, channels)
        other = (f"the first is {size[0]}x{size[1]}: set an image size (prepare's --image-size, "
                 f"data.image_size) to stretch every image to it")
    kept_labels = [label_of[p] for p in keep] if classes is not None else None
    return FolderListing(root, keep, kept_labels, classes, channels, size, skipped, other)


def first_size(files: Sequence[Path], channels: int) -> tuple[int, int]:
    for p in files[:64]:
        try:
            return load_sized(p, channels)[1]
        except BadImage:
            continue
    raise DataError(f"{files[0].parent}: none of the first {min(64, len(files))} files is a readable image")


def decode_blocks(listing: FolderListing, indices: Sequence[int], block: int = 256, strict: bool = False
                  ) -> Iterator[list[tuple[int, Tensor]]]:
    """(index into ``listing.files``, (C, H, W) uint8) for ``indices``, ``block`` files at a time;
    unreadable files are added to ``listing.skipped`` (or stop a ``strict`` run); an image of
    another size is stretched or an error, as ``listing.other_size`` says."""
    exact = listing.other_size is not None
    for start in range(0, len(indices), block):
        part = list(indices[start:start + block])
        paths = [listing.files[i] for i in part]
        decoded = decode_many(paths, listing.channels, None if exact else listing.size)
        out = []
        for i, p, result in zip(part, paths, decoded, strict=True):
            if isinstance(result, BadImage):
                loading.skip_bad(p, result, listing.skipped, strict)
            else:
                check_size(p, result, listing)
                out.append((i, result))
        yield out


def check_size(path: Path, image: Tensor, listing: FolderListing) -> None:
    """An image of another size than the listing's, which it does not stretch: a one-line error."""
    if tuple(image.shape[1:]) != listing.size:
        raise DataError(f"{path}: a {image.shape[1]}x{image.shape[2]} image; {listing.other_size}")
