"""Data: in-memory image sets, the dataset registry and deterministic splits."""

from aevision.data import builtin as _builtin  # noqa: F401  (registers the built-in datasets)
from aevision.data import crops as _crops  # noqa: F401
from aevision.data.imageset import ImageSet, Skipped, to_float, to_uint8
from aevision.data.registry import DATASETS, Source, Splits, data_root, load_dataset
from aevision.data.splits import labelled_subset, permutation, train_val_split

__all__ = [
    "DATASETS",
    "ImageSet",
    "Skipped",
    "Source",
    "Splits",
    "data_root",
    "labelled_subset",
    "load_dataset",
    "permutation",
    "to_float",
    "to_uint8",
    "train_val_split",
]
