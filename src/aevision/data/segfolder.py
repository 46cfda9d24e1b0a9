"""``segfolder:PATH``: a user's segmentation data, ``images/`` and ``masks/`` paired by file stem.

A mask is a single-channel PNG whose pixel values are class ids: greyscale (8 or 16 bit) or a
palette PNG (the PASCAL VOC convention: the palette index is the class, the colours are only for
viewing; 255 marks unknown pixels). Class names come from ``data.classes``, else a
``classes.txt`` beside ``images/`` (one name per line, class 0 first), else the largest id found.
Masks holding only 0 and 255 (the usual binary format) are background / foreground, 255 being
class 1 instead of unknown, unless two class names say otherwise: more than two names keep 255
unknown. One log line says how the masks were read (classes, pixels of each, pixels ignored).
Every way the pairing can go wrong stops with one line naming the file: a missing mask, a mask
whose size differs from its image, a value that is not a class.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from aevision.data.images import BadImage, is_hidden, is_image_path, load_image, open_image
from aevision.data.loading import check_one_size, guess_channels, skip_bad, skipped_example
from aevision.data.registry import Source, takes_argument
from aevision.data.segmentation import fixed_test_split, register_segmentation
from aevision.data.segset import IGNORE_INDEX, SegSet, SegSplits, default_palette
from aevision.errors import DataError
from aevision.io import user_path
from aevision.validation import check

log = logging.getLogger(__name__)

_INTEGER_MODES = frozenset({"1", "L", "P", "I", "I;16", "I;16B", "I;16L", "I;16N"})


def read_mask(path: Path) -> tuple[np.ndarray, list[tuple[int, int, int]] | None]:
    """A mask file -> ((H, W) int64 class ids, its palette when it is a palette PNG)."""
    try:
        img = open_image(path)
    except BadImage as e:
        raise DataError(f"{path}: cannot read mask ({e})") from None
    if img.mode not in _INTEGER_MODES:
        raise DataError(f"{path}: mask has mode {img.mode} (colour); expected a single-channel PNG "
                        f"of class ids (greyscale or palette)")
    arr = np.asarray(img).astype(np.int64)
    palette = None
    if img.mode == "P":
        flat = img.getpalette() or []
        palette = [tuple(flat[i:i + 3]) for i in range(0, len(flat) - 2, 3)]
    return arr, palette  # type: ignore[return-value]


def resize_image(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(C, H, W) uint8 -> (C, *size), resampled as :func:`load_image` does."""
    arr = image.permute(1, 2, 0).numpy()
    pil = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)
    out = np.asarray(pil.resize((int(size[1]), int(size[0])), Image.Resampling.BILINEAR, reducing_gap=3.0))
    out = out[:, :, None] if out.ndim == 2 else out
    return torch.from_numpy(out.transpose(2, 0, 1).copy())


def read_classes(root: Path, classes: list[str] | None) -> tuple[list[str] | None, str]:
    """Class names and where they came from (for error messages)."""
    if classes is not None:
        return list(classes), "data.classes"
    listing = root / "classes.txt"
    if listing.is_file():
        names = [line.strip() for line in listing.read_text(encoding="utf-8").splitlines()]
        names = [n for n in names if n]
        if not names:
            raise DataError(f"{listing}: no class names (one per line, class 0 first)")
        return names, str(listing)
    return None, "the largest id in the masks"


def pair_files(root: Path) -> tuple[list[tuple[Path, Path]], list[Path]]:
    """(image, mask) pairs by stem, and masks that have no image."""
    images_dir, masks_dir = root / "images", root / "masks"
    for d in (images_dir, masks_dir):
        if not d.is_dir():
            raise DataError(f"segfolder:{root}: no {d.name}/ folder (expected images/ and masks/ "
                            f"with matching file names)")
    images = sorted(p for p in images_dir.iterdir() if p.is_file() and not is_hidden(p.name))
    masks: dict[str, Path] = {}
    for p in sorted(masks_dir.iterdir()):
        usable = p.is_file() and not is_hidden(p.name) and is_image_path(p)
        # a .png wins over another file with the same stem
        if usable and (p.stem not in masks or p.suffix.lower() == ".png"):
            masks[p.stem] = p
    pairs = []
    for img in images:
        if not is_image_path(img):
            continue
        mask = masks.pop(img.stem, None)
        if mask is None:
            raise DataError(f"segfolder:{root}: no mask for images/{img.name} "
                            f"(expected masks/{img.stem}.png)")
        if mask.suffix.lower() in LOSSY_SUFFIXES:
            raise DataError(f"{mask}: a JPEG mask: its compression changes pixel values, so they are no "
                            f"longer class ids; save masks as PNG")
        pairs.append((img, mask))
    if not pairs:
        raise DataError(f"segfolder:{root}: no images in images/")
    return pairs, list(masks.values())


def load_segfolder(root: str | Path, *, channels: int | None = None,
                   image_size: tuple[int, int] | None = None, classes: list[str] | None = None,
                   strict: bool = False) -> SegSet:
    """Decode every image and mask under ``root`` into memory, checking each pair."""
    root = user_path(root)
    if not root.is_dir():
        raise DataError(f"segfolder:{root}: no such folder")
    pairs, orphans = pair_files(root)
    if orphans:
        log.warning("segfolder:%s: %d masks have no image (e.g. masks/%s)", root, len(orphans),
                    orphans[0].name)
    names, names_from = read_classes(root, classes)
    if channels is None:
        channels = guess_channels([p for p, _ in pairs])
    images, masks, files, skipped = [], [], [], []
    palette: list[tuple[int, int, int]] | None = None
    max_id, values, grey_levels = 0, set(), None
    for img_path, mask_path in pairs:
        try:
            native = load_image(img_path, channels)
        except BadImage as e:
            skip_bad(img_path, e, skipped, strict)
            continue
        mask, pal = read_mask(mask_path)
        check_mask(root, mask, mask_path, native, img_path, names, names_from)
        valid = mask[mask != IGNORE_INDEX]
        max_id = max(max_id, int(valid.max()) if valid.size else 0)
        if grey_levels is None and names is None and valid.size and int(valid.max()) > MAX_UNNAMED_ID:
            grey_levels = mask_path
        values.update(np.unique(mask).tolist())
        if palette is None:
            palette = pal
        if image_size is not None and tuple(native.shape[1:]) != tuple(image_size):
            native = resize_image(native, image_size)
            mask = np.asarray(Image.fromarray(mask.astype(np.uint8)).resize(
                (int(image_size[1]), int(image_size[0])), Image.Resampling.NEAREST))
        images.append(native)
        masks.append(torch.from_numpy(mask.astype(np.uint8)))
        files.append(str(img_path))
    if not images:
        raise DataError(f"segfolder:{root}: no readable images{skipped_example(skipped, '')}")
    check_one_size(f"segfolder:{root}", list(zip(files, images, strict=True)))
    if skipped:
        log.warning("segfolder:%s: skipped %d unreadable images (e.g. %s: %s)", root, len(skipped),
                    skipped[0].path, skipped[0].reason)
    stacked = torch.stack(masks)
    binary = is_binary(values, names)
    if grey_levels is not None and not binary:
        raise grey_levels_error(grey_levels, max_id, len(values))
    if binary:
        stacked[stacked == IGNORE_INDEX] = 1
        names = names or ["background", "foreground"]
    elif names is None:
        names = [str(i) for i in range(max_id + 1)]
    k = len(names)
    colours = (palette[:k] + default_palette(k)[len(palette):]) if palette else default_palette(k)
    data = SegSet(torch.stack(images), stacked, names, f"segfolder:{root}", files, colours, skipped)
    log.info("%s", how_read(data, names_from, binary))
    return data


# without class names, ids above this are taken for grey levels (masks resized with smoothing or
# saved lossy), not for a real class count
MAX_UNNAMED_ID = 127
LOSSY_SUFFIXES = frozenset({".jpg", ".jpeg"})


def grey_levels_error(path: Path, max_id: int, distinct: int) -> DataError:
    """Unnamed mask values too high to be class ids: a one-line error naming a mask that has them."""
    return DataError(f"{path}: mask values up to {max_id} ({distinct} distinct in all masks) are grey "
                     f"levels, not class ids: were the masks resized with smoothing? Masks hold 0, 1, "
                     f"2... (255 unknown) or 0/255; name over {MAX_UNNAMED_ID + 1} real classes in "
                     f"classes.txt")


def is_binary(values: set[int], names: list[str] | None) -> bool:
    """Masks of 0 and 255 only (both present), with no names or two: 255 is the foreground."""
    return values == {0, IGNORE_INDEX} and (names is None or len(names) == 2)


def how_read(data: SegSet, names_from: str, binary: bool) -> str:
    """One line: the classes found (with their share of the known pixels) and the pixels ignored."""
    counts = data.pixel_counts().tolist()
    known = max(1, sum(counts))
    classes = ", ".join(f"{i} {c} {100 * n / known:.1f}%" for i, (c, n) in
                        enumerate(zip(data.classes, counts, strict=True)))
    ignored = int((data.masks == IGNORE_INDEX).sum())
    origin = ("binary masks (0 and 255 only): 255 read as class 1" if binary
              else f"class names from {names_from}")
    return (f"{data.name}: {len(data)} masks, {origin}; classes {classes}; {ignored} pixels "
            f"({100 * ignored / data.masks.numel():.1f}%) unknown (255), ignored")


def check_mask(root: Path, mask: np.ndarray, mask_path: Path, image: torch.Tensor, img_path: Path,
               names: list[str] | None, names_from: str) -> None:
    """A mask has its image's size and only class ids (or 255, unknown), or a one-line error."""
    h, w = image.shape[1:]
    if mask.shape != (h, w):
        raise DataError(f"segfolder:{root}: masks/{mask_path.name} is "
                        f"{mask.shape[0]}x{mask.shape[1]} but images/{img_path.name} is {h}x{w} "
                        f"(a mask must have its image's size)")
    bad = (mask >= (len(names) if names is not None else IGNORE_INDEX)) & (mask != IGNORE_INDEX)
    if bad.any():
        r, c = (int(v[0]) for v in np.nonzero(bad))
        known = (f"0..{len(names) - 1} from {names_from}" if names is not None
                 else f"0..{IGNORE_INDEX - 1}")
        raise DataError(f"{mask_path}: label {int(mask[r, c])} at row {r}, column {c} is not a "
                        f"class ({known}; {IGNORE_INDEX} marks unknown pixels)")


@register_segmentation("segfolder", "segfolder:PATH: PATH/images/ and PATH/masks/ (integer or "
                       "palette PNGs of class ids, 255 = unknown), paired by file name")
@takes_argument
def segfolder(source: Source, *, classes: list[str] | None = None,
              test_fraction: float = 0.2) -> SegSplits:
    check(0 <= test_fraction < 1, "data.test_fraction", test_fraction, "a fraction in [0, 1)")
    if classes is not None:
        check(1 <= len(classes) < IGNORE_INDEX, "data.classes", classes,
              f"a list of 1..{IGNORE_INDEX - 1} class names")
    assert source.argument is not None  # guaranteed by takes_argument
    data = load_segfolder(source.argument, channels=source.channels, image_size=source.image_size,
                          classes=classes, strict=source.strict)
    return fixed_test_split(data, round(test_fraction * len(data)))
