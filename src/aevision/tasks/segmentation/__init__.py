"""Semantic segmentation with an autoencoder-pretrained encoder (a U-Net around it).

    import aevision
    aevision.pretrain({"model": {"name": "conv"}, "data": {"name": "shapes-seg"},
                       "output_dir": "runs/ae"})
    result = aevision.segment({"encoder": "runs/ae", "data": {"name": "shapes-seg"},
                               "labels": 50, "freeze_epochs": 5, "output_dir": "runs/seg"})
    seg = aevision.load_segmenter("runs/seg")
    masks = aevision.predict_masks(seg, images)      # (N, H, W) class ids
"""

from aevision.tasks.segmentation.config import SegmentConfig, build_segment_config
from aevision.tasks.segmentation.io import load_segmenter, save_segmenter
from aevision.tasks.segmentation.loss import SegLoss
from aevision.tasks.segmentation.metrics import SegMetrics, segmentation_metrics
from aevision.tasks.segmentation.model import Segmenter
from aevision.tasks.segmentation.predict import predict_files, predict_masks
from aevision.tasks.segmentation.train import SegmentResult, segment

__all__ = [
    "SegLoss",
    "SegMetrics",
    "SegmentConfig",
    "SegmentResult",
    "Segmenter",
    "build_segment_config",
    "load_segmenter",
    "predict_files",
    "predict_masks",
    "save_segmenter",
    "segment",
    "segmentation_metrics",
]
