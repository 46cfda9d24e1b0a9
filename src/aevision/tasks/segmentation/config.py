"""``aevision segment`` settings: plain dataclasses, YAML + ``key=value`` overrides like pretrain.

The data, architecture and training sections are the pretrain ones (:class:`DataConfig`,
:class:`ModelConfig`, :class:`TrainConfig`), so a user writes them the same way in both commands.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Literal

from aevision.config import (
    AugmentConfig,
    DataConfig,
    ModelConfig,
    TrainConfig,
    apply_override,
    from_dict,
    load_yaml,
    merged,
    subfield,
    to_dict,
)
from aevision.tasks.flips import tta_rule, valid_tta
from aevision.tasks.losses import check_weight_list
from aevision.tasks.segmentation.augment import SEG_AUGMENTS
from aevision.validation import check

SEG_LOSS_TERMS = ("loss", "ce", "dice")  # what the segmenter's loss reports (tasks/segmentation/loss.py)
SEG_SCORES = ("miou", "mean_dice", "pixel_accuracy")  # validation scores train.monitor may name

# Defaults that differ from pretraining's (small labelled sets: small batches, cosine decay).
DEFAULTS: dict[str, Any] = {
    "data": {"name": "shapes-seg"},
    # the epoch kept is the one with the best validation mIoU (the score the test reports)
    "train": {"epochs": 30, "batch_size": 16, "lr": 2e-3, "scheduler": "cosine", "monitor": "miou"},
    "augment": {"hflip": True},
}


@dataclass
class DecoderConfig:
    """The U-Net decoder."""

    channels: list[int] | None = None  # width per level, full resolution first; default: the encoder's
    stem_channels: int = 16  # full-resolution convolution of the input (0: none)
    batch_norm: bool = True

    def validate(self, prefix: str = "decoder") -> None:
        if self.channels is not None:
            check(bool(self.channels) and min(self.channels) >= 1, f"{prefix}.channels", self.channels,
                  "positive widths (one per encoder stage, finest first) or null")
        check(self.stem_channels >= 0, f"{prefix}.stem_channels", self.stem_channels, "an integer >= 0")


@dataclass
class SegLossConfig:
    """:class:`~aevision.tasks.segmentation.loss.SegLoss`: cross-entropy + Dice; unknown pixels
    (mask value 255) are always skipped. (Fine-tuning's loss, per image, is
    :class:`aevision.tasks.losses.LossConfig`.)"""

    ce_weight: float = 1.0
    dice_weight: float = 1.0
    class_weights: list[float] | Literal["balanced"] | None = None  # CE weight per class

    def validate(self, prefix: str = "loss") -> None:
        check(self.ce_weight >= 0, f"{prefix}.ce_weight", self.ce_weight, "a number >= 0")
        check(self.dice_weight >= 0, f"{prefix}.dice_weight", self.dice_weight, "a number >= 0")
        check(self.ce_weight + self.dice_weight > 0, f"{prefix}.ce_weight", self.ce_weight,
              "a positive weight for at least one of ce_weight and dice_weight")
        if isinstance(self.class_weights, list):
            check_weight_list(self.class_weights, f"{prefix}.class_weights")


@dataclass
class SegmentConfig:
    """Everything ``aevision segment`` needs; ``to_dict()`` is written beside every metric."""

    seed: int = 0
    output_dir: str = "runs/segment"
    encoder: str | None = None  # a model folder from 'aevision pretrain'
    init: Literal["pretrained", "scratch"] = "pretrained"  # scratch: same architecture, random weights
    arch: ModelConfig = field(default_factory=ModelConfig)  # the encoder when there is no model folder
    freeze_epochs: int = 0  # epochs with the encoder frozen before fine-tuning it
    freeze_decoder: bool = False  # freeze a pretrained ('unet') decoder too: only the head learns at first
    # take a 'unet' autoencoder's decoder weights too (false: its encoder's alone; the decoder, of the
    # same architecture, starts from random weights: an inpainting decoder has learnt to fill in pixels)
    pretrained_decoder: bool = True
    pretrained_lr_scale: float = 1.0  # lr of the autoencoder's weights = train.lr * this (init: pretrained)
    # the frozen parts' batch-norm statistics from pretraining stay fixed after freeze_epochs too
    # (batches of a few masks would replace them); their scales and shifts still train
    freeze_norm: bool = False
    labels: int | None = None  # train on this many masks (seeded choice); None: all
    # images an epoch draws, cycling a smaller labelled set; default: the training split's size,
    # masked or not (so 10 masks train as many steps as all of them); train.epoch_steps, when set,
    # sizes epochs by steps instead
    epoch_images: int | None = None
    examples: int | None = 16  # test images written as mask and overlay PNGs (None: all)
    # test-time flips ("hflip", "vflip"): validation, test and predict-masks average the class
    # probabilities of the image and of its mirror images (every combination); training is unchanged
    tta: list[str] = field(default_factory=list)
    data: DataConfig = field(default_factory=lambda: DataConfig(name="shapes-seg"))
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    loss: SegLossConfig = field(default_factory=SegLossConfig)
    # random changes to each training batch, to images and masks alike (SEG_AUGMENTS of them)
    augment: AugmentConfig = field(default_factory=lambda: AugmentConfig(**DEFAULTS["augment"]))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(**DEFAULTS["train"]))

    def validate(self, prefix: str = "") -> None:
        """``prefix``: where this config sits in a larger one ("" at the top level)."""
        def at(name: str) -> str:
            return subfield(prefix, name)

        check(self.seed >= 0, at("seed"), self.seed, "an integer >= 0")
        check(self.freeze_epochs >= 0, at("freeze_epochs"), self.freeze_epochs, "an integer >= 0")
        check(self.init == "scratch" or self.freeze_epochs <= self.train.epochs, at("freeze_epochs"),
              self.freeze_epochs, f"at most train.epochs ({self.train.epochs})")
        check(isinstance(self.freeze_decoder, bool), at("freeze_decoder"), self.freeze_decoder,
              "true or false")
        check(isinstance(self.pretrained_decoder, bool), at("pretrained_decoder"), self.pretrained_decoder,
              "true or false")
        check(isinstance(self.freeze_norm, bool), at("freeze_norm"), self.freeze_norm, "true or false")
        check(self.pretrained_lr_scale > 0, at("pretrained_lr_scale"), self.pretrained_lr_scale,
              "a number > 0")
        if self.labels is not None:
            check(self.labels >= 1, at("labels"), self.labels, "a positive integer or null (all)")
        if self.epoch_images is not None:
            check(self.epoch_images >= 1, at("epoch_images"), self.epoch_images, "a positive integer or null")
        if self.examples is not None:
            check(self.examples >= 0, at("examples"), self.examples, "an integer >= 0 or null (all)")
        check(isinstance(self.tta, list) and valid_tta(self.tta), at("tta"), self.tta, tta_rule())
        check(self.init == "scratch" or self.encoder is not None, at("encoder"), self.encoder,
              "a model folder from 'aevision pretrain' (or init: scratch for a randomly initialised encoder)")
        self.data.validate(at("data"))
        self.decoder.validate(at("decoder"))
        self.train.validate(at("train"))
        check(self.train.monitor in (*SEG_LOSS_TERMS, *SEG_SCORES), at("train.monitor"), self.train.monitor,
              f"one of {', '.join((*SEG_LOSS_TERMS, *SEG_SCORES))}")
        self.loss.validate(at("loss"))
        self.augment.validate(at("augment"), SEG_AUGMENTS)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


def build_segment_config(
    path: str | os.PathLike[str] | None = None,
    overrides: list[str] | None = None,
    base: dict[str, Any] | None = None,
) -> SegmentConfig:
    """Segmentation defaults <- ``base`` <- YAML file <- ``overrides``, validated."""
    data = merged(merged(DEFAULTS, base or {}), load_yaml(path) if path is not None else {})
    for assignment in overrides or []:
        apply_override(data, assignment)
    cfg = from_dict(SegmentConfig, data, "")
    cfg.validate()
    return cfg


def as_segment_config(config: SegmentConfig | dict[str, Any] | str | os.PathLike[str] | None,
                      overrides: list[str] | tuple[str, ...] = ()) -> SegmentConfig:
    if isinstance(config, SegmentConfig):
        return build_segment_config(base=config.to_dict(), overrides=list(overrides)) if overrides else config
    if isinstance(config, dict):
        return build_segment_config(base=config, overrides=list(overrides))
    return build_segment_config(config, list(overrides))
