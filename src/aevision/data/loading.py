"""Steps shared by the loaders of user folders (``folder:``, ``frames:``, ``segfolder:``).

Each loader scans its own layout, then reads files the same way: files without an image suffix
and files that do not decode are skipped and listed (or stop a ``strict`` run), the channel
count is guessed from the headers when not given, and images of different sizes are an error
that names an example and the setting that resizes them.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from torch import Tensor

from aevision.data.images import BadImage, decode_many, is_image_path, peek_is_grey
from aevision.data.imageset import Skipped
from aevision.errors import DataError
from aevision.validation import plural

log = logging.getLogger(__name__)


def with_image_suffix(files: Sequence[Path], skipped: list[Skipped]) -> list[Path]:
    """The files with an image suffix; the others are added to ``skipped``."""
    kept = []
    for p in files:
        if is_image_path(p):
            kept.append(p)
        else:
            skipped.append(Skipped(str(p), "not an image file (unknown suffix)"))
    return kept


def stop_if_strict(skipped: list[Skipped], strict: bool) -> None:
    if strict and skipped:
        raise DataError(f"{skipped[0].path}: {skipped[0].reason} (strict mode)")


# headers read to guess the channels: evenly spread over the files, so that every class folder of a
# sorted listing is looked at, not only the first one's
CHANNEL_SAMPLE = 256


def guess_channels(files: Sequence[Path]) -> int:
    """1 when the headers of ``files`` (up to :data:`CHANNEL_SAMPLE` of them, evenly spread) are all
    greyscale, else 3 (grey images are then read as colour, which loses nothing). Grey is said in
    one line, with the setting that reads colour: a colour image the sample missed loses its colour."""
    n = len(files)
    picked = [files[i * (n - 1) // (CHANNEL_SAMPLE - 1)] for i in range(CHANNEL_SAMPLE)] \
        if n > CHANNEL_SAMPLE else list(files)
    greys = [peek_is_grey(p) for p in picked]
    if not greys or any(g is False for g in greys):
        return 3
    log.info("reading the images as greyscale (1 channel): the %s read are all grey; data.channels=3 "
             "reads them in colour", plural(len(picked), "image header"))
    return 1


def decode_or_skip(files: Sequence[Path], channels: int, image_size: Sequence[int] | None,
                   skipped: list[Skipped], strict: bool) -> list[tuple[Path, Tensor]]:
    """(file, (C, H, W) uint8) for every file that decodes; the others are added to ``skipped``
    (or, when ``strict``, stop with the first one)."""
    decoded = []
    for p, result in zip(files, decode_many(files, channels, image_size), strict=True):
        if isinstance(result, BadImage):
            skip_bad(p, result, skipped, strict)
        else:
            decoded.append((p, result))
    return decoded


def skip_bad(path: Path, error: BadImage, skipped: list[Skipped], strict: bool) -> None:
    """An image that does not decode: listed in ``skipped``, or the end of a ``strict`` run."""
    if strict:
        raise DataError(f"{path}: {error} (strict mode)")
    skipped.append(Skipped(str(path), str(error)))


def skipped_example(skipped: list[Skipped], noun: str = "files") -> str:
    """`` (3 files skipped, e.g. a.txt: reason)``, or nothing when none was skipped."""
    if not skipped:
        return ""
    count = f"{len(skipped)} {noun}" if noun else str(len(skipped))
    return f" ({count} skipped, e.g. {skipped[0].path}: {skipped[0].reason})"


def skip_reasons(skipped: list[Skipped]) -> str:
    """``2 not an image file, 1 empty file``: how many files were skipped for each reason."""
    reasons = Counter(s.reason.split(" (")[0] for s in skipped)
    return ", ".join(f"{n} {r}" for r, n in reasons.most_common())


def check_one_size(source: str, images: Sequence[tuple[str, Tensor]], what: str = "images",
                   verb: str = "is") -> None:
    """Every (C, H, W) image of ``images`` (name, image) has one size, or a one-line error naming
    the most common size and the first image of another one."""
    sizes = Counter(tuple(t.shape[1:]) for _, t in images)
    if len(sizes) > 1:
        (common, _), (other, _) = sizes.most_common(2)
        example = next(name for name, t in images if tuple(t.shape[1:]) == other)
        raise DataError(f"{source}: {what} differ in size (most are {common[0]}x{common[1]}, "
                        f"{example} {verb} {other[0]}x{other[1]}); set data.image_size=[H,W] to "
                        f"resize them")
