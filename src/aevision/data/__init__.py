"""Data: in-memory image sets, the dataset registry and deterministic splits."""

from aevision.data import builtin as _builtin  # noqa: F401  (registers the built-in datasets)
from aevision.data import frames as _frames  # noqa: F401  (registers frames:PATH)
from aevision.data import moving_shapes as _moving_shapes  # noqa: F401  (registers moving-shapes)
from aevision.data.imageset import ImageSet, Skipped, to_float, to_uint8
from aevision.data.registry import DATASETS, Source, Splits, data_root, load_dataset
from aevision.data.splits import labelled_subset, permutation, train_val_split
from aevision.data.video import ClipWindows, VideoSet, training_data

__all__ = [
    "DATASETS",
    "ClipWindows",
    "ImageSet",
    "Skipped",
    "Source",
    "Splits",
    "VideoSet",
    "data_root",
    "labelled_subset",
    "load_dataset",
    "permutation",
    "to_float",
    "to_uint8",
    "train_val_split",
    "training_data",
]
