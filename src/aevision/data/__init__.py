"""Data: in-memory image sets, the dataset registry and deterministic splits."""

from aevision.data import builtin as _builtin  # noqa: F401  (registers the built-in datasets)
from aevision.data import ccp as _ccp  # noqa: F401  (segmentation datasets)
from aevision.data import crops as _crops  # noqa: F401  (registers crops:PATH)
from aevision.data import frames as _frames  # noqa: F401  (registers frames:PATH)
from aevision.data import moving_shapes as _moving_shapes  # noqa: F401  (registers moving-shapes)
from aevision.data import oxford_pet as _oxford_pet  # noqa: F401  (segmentation datasets)
from aevision.data import pennfudan as _pennfudan  # noqa: F401
from aevision.data import segfolder as _segfolder  # noqa: F401
from aevision.data import shapes_seg as _shapes_seg  # noqa: F401
from aevision.data import shards as _shards  # noqa: F401  (registers shards:PATH)
from aevision.data import union as _union  # noqa: F401  (registers union: a pool of datasets)
from aevision.data.imageset import ImageSet, Skipped, to_float, to_uint8
from aevision.data.registry import DATASETS, Source, Splits, data_root, load_dataset
from aevision.data.segmentation import SEG_DATASETS, load_segmentation
from aevision.data.segset import IGNORE_INDEX, SegSet, SegSplits
from aevision.data.splits import labelled_subset, permutation, train_val_split
from aevision.data.video import ClipWindows, VideoSet, training_data

__all__ = [
    "DATASETS",
    "IGNORE_INDEX",
    "SEG_DATASETS",
    "ClipWindows",
    "ImageSet",
    "SegSet",
    "SegSplits",
    "Skipped",
    "Source",
    "Splits",
    "VideoSet",
    "data_root",
    "labelled_subset",
    "load_dataset",
    "load_segmentation",
    "permutation",
    "to_float",
    "to_uint8",
    "train_val_split",
    "training_data",
]
