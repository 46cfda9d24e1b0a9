"""Built-in datasets: embedded ``digits``, torchvision's sets, generated ``shapes``, folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from aevision.data.archives import extract_cached, is_archive, unwrap_single_folder
from aevision.data.folder import load_folder, load_split_folders, split_folders
from aevision.data.imageset import ImageSet
from aevision.data.registry import DATASETS, Source, Splits, fixed_test_split, takes_argument
from aevision.data.shapes import KINDS, shapes_classification
from aevision.errors import DataError
from aevision.io import user_path
from aevision.validation import check


@DATASETS.register("digits", "scikit-learn's bundled 8x8 handwritten digits "
                   "(1,797 images, 10 classes; no download)")
def digits(source: Source, *, test_fraction: float = 0.25) -> Splits:
    from sklearn.datasets import load_digits

    check(0 < test_fraction < 1, "data.test_fraction", test_fraction, "a fraction in (0, 1)")
    d = load_digits()
    # pixel values are 0..16: stretch to the usual 0..255 range
    pixels = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)
    data = ImageSet(
        images=torch.from_numpy(pixels).unsqueeze(1),
        labels=torch.from_numpy(d.target.astype(np.int64)),
        classes=[str(i) for i in range(10)],
        name="digits",
    )
    return fixed_test_split(data, test_fraction)


# name -> (torchvision class name, folder torchvision expects under the root, class names)
_TORCHVISION = {
    "mnist": ("MNIST", "MNIST/raw", [str(i) for i in range(10)]),
    "fashion-mnist": ("FashionMNIST", "FashionMNIST/raw", [
        "t-shirt/top", "trouser", "pullover", "dress", "coat",
        "sandal", "shirt", "sneaker", "bag", "ankle boot"]),
    "kmnist": ("KMNIST", "KMNIST/raw", ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"]),
    "cifar10": ("CIFAR10", "cifar-10-batches-py", [
        "airplane", "automobile", "bird", "cat", "deer",
        "dog", "frog", "horse", "ship", "truck"]),
}


def torchvision_split(name: str, source: Source, train: bool):
    """Open one split of a torchvision dataset, downloading it only when it is missing."""
    import torchvision.datasets as tvd

    cls_name, folder, _ = _TORCHVISION[name]
    cls = getattr(tvd, cls_name)
    root = str(source.root)
    try:
        return cls(root, train=train, download=False)
    except RuntimeError:
        pass  # not there yet
    expected = Path(root) / folder
    if not source.download:
        raise DataError(
            f"{name}: dataset files not found under {expected} (download is off; put the files "
            f"there or set data.root / AEVISION_DATA to the folder that holds {folder.split('/')[0]})"
        )
    try:
        return cls(root, train=train, download=True)  # checks torchvision's md5 sums
    except Exception as e:
        raise DataError(
            f"{name}: dataset files not found under {expected} and download failed "
            f"({type(e).__name__}); when offline, set data.root / AEVISION_DATA to a folder "
            f"that holds {folder.split('/')[0]}/"
        ) from None


def _torchvision_set(name: str, source: Source, train: bool) -> ImageSet:
    ds = torchvision_split(name, source, train)
    data = ds.data
    images = torch.as_tensor(np.asarray(data)) if not isinstance(data, torch.Tensor) else data
    images = images.unsqueeze(1) if images.dim() == 3 else images.permute(0, 3, 1, 2)
    labels = torch.as_tensor(np.asarray(ds.targets), dtype=torch.long)
    return ImageSet(images.contiguous().to(torch.uint8), labels, _TORCHVISION[name][2], name)


def _register_torchvision(name: str, summary: str) -> None:
    def loader(source: Source) -> Splits:
        return Splits(train=_torchvision_set(name, source, True),
                      test=_torchvision_set(name, source, False))

    loader.__name__ = name.replace("-", "_")
    DATASETS.register(name, summary)(loader)


_register_torchvision("mnist", "MNIST handwritten digits, 28x28 grey (60k train / 10k test; torchvision)")
_register_torchvision("fashion-mnist", "Fashion-MNIST clothing, 28x28 grey (60k / 10k; torchvision)")
_register_torchvision("kmnist", "Kuzushiji-MNIST cursive Japanese, 28x28 grey (60k / 10k; torchvision)")
_register_torchvision("cifar10", "CIFAR-10 natural images, 32x32 RGB (50k / 10k; torchvision)")


@DATASETS.register("shapes", "generated shapes over textured backgrounds, labelled by kind (no download)")
def shapes(
    source: Source, *, n_train: int = 4000, n_test: int = 1000, size: int = 32,
    kinds: list[str] | None = None,
) -> Splits:
    kinds = list(kinds or KINDS)
    check(n_train >= 1, "data.n_train", n_train, "an integer >= 1")
    check(n_test >= 0, "data.n_test", n_test, "an integer >= 0")
    check(size >= 8, "data.size", size, "an integer >= 8")
    for i, k in enumerate(kinds):
        check(k in KINDS, f"data.kinds[{i}]", k, "one of " + ", ".join(KINDS))
    images, labels = shapes_classification(n_train + n_test, size, seed=1234, kinds=tuple(kinds))
    data = ImageSet(images, labels, kinds, "shapes")
    return Splits(train=data.subset(range(n_train)),
                  test=data.subset(range(n_train, n_train + n_test)) if n_test else None)


@DATASETS.register("folder", "folder:PATH: images in class subfolders (labelled) or flat (unlabelled), "
                   "or train/ + test/ (+ val/) split folders of those; PATH may be a .zip/.tar archive")
@takes_argument
def folder(source: Source, *, test_fraction: float = 0.0) -> Splits:
    check(0 <= test_fraction < 1, "data.test_fraction", test_fraction, "a fraction in [0, 1)")
    assert source.argument is not None
    path = user_path(source.argument)
    if is_archive(path):  # folder:images.zip -> unpacked once, safely, under the data root
        path = unwrap_single_folder(extract_cached(path, source.root))
    splits = split_folders(path)
    if splits is not None:  # the folder's own splits: never carved again
        check(test_fraction == 0, "data.test_fraction", test_fraction,
              f"0: {path} has its own test/ split")
        sets = load_split_folders(splits, channels=source.channels, image_size=source.image_size,
                                  strict=source.strict)
        return Splits(train=sets["train"], test=sets["test"], val=sets.get("val"))
    data = load_folder(path, channels=source.channels, image_size=source.image_size,
                       strict=source.strict)
    if test_fraction == 0:
        return Splits(train=data, test=None)
    return fixed_test_split(data, test_fraction)
