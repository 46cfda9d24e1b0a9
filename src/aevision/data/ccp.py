"""``clothing-co-parsing``: street photos of people (Clothing Co-Parsing), person or clothing masks.

Read from ``<data root>/clothing-co-parsing/``: ``photos/NNNN.jpg``, ``masks/NNNN.png`` for some
of them (8-bit label ids, 0 = background, the names in ``classes.txt``, one per line, id 0 first)
and no mask for the rest. Only the photo's main subject is labelled (people behind it count as
background), so any label > 0 is that person. ``labels`` chooses the classes:

- ``person`` (default): background / person;
- ``groups``: background, skin, hair and six groups of clothing (:data:`GROUPS`);
- ``all``: the file's own labels (59 with ``null`` = background).

The photos differ in height, so they are resized to ``data.image_size`` (default 192 x 128, height
x width, about their aspect). A person mask is resized as a coverage map thresholded at one half
(thin limbs survive, as for Penn-Fudan); label maps by nearest neighbour. The test split
(``n_test`` masked photos, default 204) is fixed. The photos without a mask are the dataset's
``unlabelled`` images: ``aevision pretrain --dataset clothing-co-parsing`` trains on them and the
training photos, never on a test photo; ``segment`` never sees them.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image

from aevision.data.images import BadImage, is_hidden, open_image, read_image
from aevision.data.imageset import ImageSet
from aevision.data.registry import Source
from aevision.data.segmentation import fixed_test_split, register_segmentation
from aevision.data.segset import SegSet, SegSplits
from aevision.errors import DataError
from aevision.validation import check

FOLDER = "clothing-co-parsing"
DEFAULT_SIZE = (192, 128)
Labels = Literal["person", "groups", "all"]

# coarse classes for labels: groups (every label of classes.txt but null belongs to one)
GROUPS: dict[str, tuple[str, ...]] = {
    "skin": ("skin",),
    "hair": ("hair",),
    "upper": ("blazer", "blouse", "bra", "cape", "cardigan", "coat", "hoodie", "jacket", "jumper",
              "shirt", "sweater", "sweatshirt", "t-shirt", "top", "vest"),
    "lower": ("intimate", "jeans", "leggings", "panties", "pants", "shorts", "skirt", "stockings",
              "tights"),
    "whole": ("bodysuit", "dress", "romper", "suit", "swimwear"),
    "footwear": ("boots", "clogs", "flats", "heels", "loafers", "pumps", "sandals", "shoes",
                 "sneakers", "socks", "wedges"),
    "accessories": ("accessories", "bag", "belt", "bracelet", "earrings", "glasses", "gloves", "hat",
                    "necklace", "purse", "ring", "scarf", "sunglasses", "tie", "wallet", "watch"),
}


def read_names(folder: Path) -> list[str]:
    """The label names of ``classes.txt`` (id 0 first), or a one-line error."""
    listing = folder / "classes.txt"
    if not listing.is_file():
        raise DataError(f"{FOLDER}: no {listing} (the label names, one per line, id 0 first)")
    names = [line.strip() for line in listing.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(names) < 2:
        raise DataError(f"{listing}: expected the background and at least one label, got {names}")
    return names


def label_table(names: list[str], labels: Labels) -> tuple[np.ndarray, list[str]]:
    """(256,) uint8 lookup from a file's label id to a class id, and the class names."""
    table = np.zeros(256, dtype=np.uint8)
    if labels == "all":
        table[: len(names)] = np.arange(len(names))
        return table, ["background", *names[1:]]
    if labels == "person":
        table[1: len(names)] = 1
        return table, ["background", "person"]
    group_of = {label: i + 1 for i, labels_in in enumerate(GROUPS.values()) for label in labels_in}
    missing = [n for n in names[1:] if n not in group_of]
    if missing:
        raise DataError(f"{FOLDER}: labels {missing} belong to no group (data.labels: groups knows "
                        f"{', '.join(sorted(group_of))}); use data.labels: all")
    table[1: len(names)] = [group_of[n] for n in names[1:]]
    return table, ["background", *GROUPS]


def read_mask(path: Path, table: np.ndarray, n_labels: int, size: tuple[int, int], person: bool
              ) -> np.ndarray:
    """A label-id PNG -> (H, W) uint8 class ids at ``size`` (h, w), or a one-line error."""
    try:
        img = open_image(path)
    except BadImage as e:
        raise DataError(f"{path}: cannot read mask ({e})") from None
    ids = np.asarray(img)
    if ids.ndim != 2:
        raise DataError(f"{path}: expected a single-channel mask of label ids, got mode {img.mode}")
    if int(ids.max()) >= n_labels:
        r, c = (int(v[0]) for v in np.nonzero(ids >= n_labels))
        raise DataError(f"{path}: label {int(ids[r, c])} at row {r}, column {c} is not in classes.txt "
                        f"(0..{n_labels - 1})")
    mapped = table[ids.astype(np.int64)]
    if person:  # coverage, thresholded at one half
        cover = Image.fromarray(mapped * 255).resize((size[1], size[0]), Image.Resampling.BILINEAR,
                                                     reducing_gap=3.0)
        return (np.asarray(cover) >= 128).astype(np.uint8)
    return np.asarray(Image.fromarray(mapped).resize((size[1], size[0]), Image.Resampling.NEAREST))


def photo_files(folder: Path) -> tuple[list[tuple[Path, Path]], list[Path]]:
    """(photo, mask) pairs by file stem, and the photos that have no mask."""
    photos_dir, masks_dir = folder / "photos", folder / "masks"
    if not photos_dir.is_dir() or not masks_dir.is_dir():
        raise DataError(f"{FOLDER}: {folder} has no photos/ and masks/ (set data.root / AEVISION_DATA to "
                        f"the folder holding {FOLDER}/)")
    photos = sorted(p for p in photos_dir.glob("*.jpg") if not is_hidden(p.name))
    masks = {p.stem: p for p in masks_dir.glob("*.png") if not is_hidden(p.name)}
    pairs = [(p, masks.pop(p.stem)) for p in photos if p.stem in masks]
    if masks:
        raise DataError(f"{FOLDER}: masks/{sorted(masks)[0]}.png has no photo "
                        f"(expected photos/{sorted(masks)[0]}.jpg)")
    if not pairs:
        raise DataError(f"{FOLDER}: no photo in {photos_dir} has a mask in {masks_dir}")
    paired = {p for p, _ in pairs}
    return pairs, [p for p in photos if p not in paired]


def load_ccp(root: Path, size: tuple[int, int], channels: int, labels: Labels
             ) -> tuple[SegSet, list[Path]]:
    """The masked photos as a :class:`SegSet`, and the paths of the photos without a mask."""
    folder = root / FOLDER
    pairs, unmasked = photo_files(folder)
    names = read_names(folder)
    table, classes = label_table(names, labels)

    def one(pair: tuple[Path, Path]) -> tuple[torch.Tensor, np.ndarray]:
        photo, mask = pair
        return (read_image(photo, channels, size),
                read_mask(mask, table, len(names), size, person=labels == "person"))

    with ThreadPoolExecutor(max_workers=4) as pool:
        decoded = list(pool.map(one, pairs))
    images = torch.stack([d[0] for d in decoded])
    masks = torch.from_numpy(np.stack([d[1] for d in decoded]))
    return SegSet(images, masks, classes, FOLDER, [str(p) for p, _ in pairs]), unmasked


def load_photos(paths: list[Path], size: tuple[int, int], channels: int) -> ImageSet:
    """Photos without masks, at the masked photos' size."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        images = list(pool.map(lambda p: read_image(p, channels, size), paths))
    shape = (0, channels, *size)
    return ImageSet(torch.stack(images) if images else torch.zeros(shape, dtype=torch.uint8),
                    name=f"{FOLDER} (no masks)", files=[str(p) for p in paths])


@register_segmentation("clothing-co-parsing", "Clothing Co-Parsing: street photos of people, person "
                       "(or clothing) masks, photos without masks for pretraining (read from "
                       "<data root>/clothing-co-parsing; fixed test split of 204 masked photos)")
def clothing_co_parsing(source: Source, *, labels: Labels = "person", n_test: int = 204) -> SegSplits:
    check(n_test >= 0, "data.n_test", n_test, "an integer >= 0")
    size: tuple[int, int] = tuple(source.image_size) if source.image_size else DEFAULT_SIZE  # type: ignore
    channels = source.channels or 3
    data, unmasked = load_ccp(Path(source.root), size, channels, labels)
    check(n_test < len(data), "data.n_test", n_test, f"an integer below the {len(data)} masked photos")
    splits = fixed_test_split(data, n_test)
    splits.unlabelled = lambda: load_photos(unmasked, size, channels)
    return splits
