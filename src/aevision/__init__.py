"""aevision: learn image representations with autoencoders and put them to work."""

from aevision.api import (
    FeatureExtractor,
    PretrainResult,
    encode,
    load,
    pretrain,
    reconstruct,
)
from aevision.config import PretrainConfig, build_config
from aevision.errors import AevisionError
from aevision.provenance import __version__
from aevision.tasks.segmentation import (
    SegmentConfig,
    load_segmenter,
    predict_masks,
    segment,
)

__all__ = [
    "AevisionError",
    "FeatureExtractor",
    "PretrainConfig",
    "PretrainResult",
    "SegmentConfig",
    "__version__",
    "build_config",
    "encode",
    "load",
    "load_segmenter",
    "predict_masks",
    "pretrain",
    "reconstruct",
    "segment",
]
