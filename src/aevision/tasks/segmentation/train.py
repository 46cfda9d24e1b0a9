"""``segment``: train a U-Net on masks around a pretrained (or random) encoder, then test it.

The protocol keeps the test split out of every choice: the segmenter trains on the training
masks (all, or ``labels`` of them), model selection uses only the validation split (the epoch
with the lowest validation loss; with no validation split the last epoch), and the test split is
scored once at the end. Everything lands in ``output_dir``: the segmenter (safetensors + JSON),
``metrics.json`` (test scores with the config and data that produced them), predicted masks
(palette PNGs) and overlays for a few test images, and the Trainer's checkpoints and history.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from aevision.config import VAL_BATCH_SIZE
from aevision.data import to_float
from aevision.data.batches import Batches, TensorBatches
from aevision.data.segmentation import load_segmentation
from aevision.data.segset import IGNORE_INDEX, SegSet, SegSplits
from aevision.data.sources import fingerprint
from aevision.data.splits import permutation
from aevision.engine import FitResult, Trainer, seed_everything
from aevision.engine.loop import TermMeans, Validate, Validation
from aevision.engine.run import Run, refuse_replacing, run_key, weights_sha256
from aevision.errors import AevisionError, ConfigError
from aevision.io import read_json
from aevision.models import Autoencoder, load_model
from aevision.models.unet import UNetDecoder
from aevision.report.masks import example_sheet, save_mask, save_overlay
from aevision.tasks.segmentation.augment import SegAugment
from aevision.tasks.segmentation.config import (
    SEG_SCORES,
    SegmentConfig,
    as_segment_config,
    build_segment_config,
)
from aevision.tasks.segmentation.io import load_segmenter, save_segmenter
from aevision.tasks.segmentation.loss import SegLoss, balanced_weights
from aevision.tasks.segmentation.metrics import SegMetrics
from aevision.tasks.segmentation.model import (
    Segmenter,
    build_segmenter,
    encoder_from_autoencoder,
    feature_encoder,
)


@dataclass
class SegmentResult:
    segmenter: Segmenter  # selected weights, eval mode
    out_dir: Path
    metrics: dict[str, Any]  # test scores (miou, iou per class, dice, pixel_accuracy)
    fit: FitResult
    config: SegmentConfig
    reused: bool = False  # the identical run had finished in out_dir: read back, not trained
    timing: dict[str, Any] = field(default_factory=dict)  # wall_seconds, cpu_seconds, resumed


def segment(
    config: SegmentConfig | dict[str, Any] | str | os.PathLike[str] | None = None,
    *,
    overrides: Sequence[str] = (),
    resume: bool = False,
    data: SegSplits | None = None,
    reuse: bool = False,
    overwrite: bool = False,
) -> SegmentResult:
    """Train and test a segmenter as configured (see :class:`SegmentConfig`), through the run
    lifecycle (engine/run.py).

    ``data`` lets callers that already loaded the dataset (benchmarks) skip loading it again.
    ``reuse``: when ``output_dir`` holds the identical finished run (same config, data, encoder
    weights, aevision version), return it without training; an unfinished one is resumed. A
    folder that holds a trained segmenter is refused unless ``resume``, ``reuse`` or ``overwrite``.
    """
    cfg = as_segment_config(config, tuple(overrides))
    refuse_replacing(cfg.output_dir, allowed=resume or reuse or overwrite)
    seed_everything(cfg.seed, cfg.train.deterministic)
    ae = load_model(cfg.encoder) if cfg.encoder else None
    splits = data if data is not None else _load(cfg, ae)
    if splits.test is None or not len(splits.test):
        raise AevisionError(f"data: {cfg.data.name} has no test split to score on "
                            f"(for segfolder, set data.test_fraction > 0)")
    run = Run(cfg.output_dir, segment_key(cfg, ae, splits), upgrade=_upgraded)
    if reuse and run.finished() is not None:
        return read_back(run.out_dir, cfg)
    train = labelled(splits.train, cfg.labels, cfg.seed)
    check_learnable(train)
    seg = prepared_segmenter(cfg, ae, train)
    val = splits.val if splits.val is not None and len(splits.val) else None
    trainer = Trainer(cfg.train, run.out_dir, seed=cfg.seed)
    batches = segment_batches(cfg, train, val, epoch_images(cfg, splits))
    config = identity(cfg.to_dict())  # what decides this run: the checkpoint's and the provenance's
    fit = run.fit(trainer, seg, *batches, config, resume=resume, reuse=reuse,
                  overwrite=overwrite, upgrade_config=_upgraded,
                  validate=validator(val.classes) if val is not None else None)
    seg.set_frozen(False)
    seg.eval()
    test_preds = predict_set(seg, splits.test, trainer.fabric.device)
    metrics = score(test_preds, splits.test)
    provenance = {"config": config, "data": data_summary(splits, train, cfg),
                  "encoder": encoder_summary(cfg, ae, config)}

    def save(folder: Path) -> None:
        save_segmenter(seg.cpu(), folder, extra=provenance)
        write_examples(folder, splits.test, test_preds, cfg.examples)  # type: ignore[arg-type]

    val_metrics = score(predict_set(seg, val, "cpu"), val) if val is not None and run.writer else None
    run.finish(save, {"metrics.json": {
        "test": metrics, "val": val_metrics, **provenance,
        "fit": fit_record(fit, validated=val is not None), "history": fit.history}})
    return SegmentResult(seg, run.out_dir, metrics, fit, cfg, timing=run.timing)


def _upgraded(saved: dict[str, Any]) -> dict[str, Any]:
    """A segment config saved by an earlier run, as this version writes it: fields added since take
    their defaults, except ``train.monitor``, whose default (miou) is not what runs did before it
    existed (they kept the lowest-loss epoch), so such a run is not taken for today's."""
    train = saved.get("train")
    if isinstance(train, dict) and "monitor" not in train:
        saved = {**saved, "train": {**train, "monitor": "loss"}}
    return identity(build_segment_config(base=saved).to_dict())


# settings that act on pretrained weights alone (see prepared_segmenter): a scratch run ignores them
PRETRAINED_ONLY = ("freeze_epochs", "freeze_decoder", "pretrained_decoder", "pretrained_lr_scale",
                   "freeze_norm")


def identity(config: dict[str, Any]) -> dict[str, Any]:
    """A segment config as far as it decides what trains: with ``init: scratch`` the pretrained-only
    settings at their defaults, so that a scratch run given a pretrained run's settings (as a
    comparison of the two does) is the same run as one without them."""
    if config.get("init") != "scratch":
        return config
    defaults = SegmentConfig().to_dict()
    return {**config, **{k: defaults[k] for k in PRETRAINED_ONLY}}


def segment_key(cfg: SegmentConfig, ae: Autoencoder | None, splits: SegSplits) -> dict[str, Any]:
    """The run's identity: the config, every split's images and masks (the test split is scored,
    so it belongs to the outputs), and what the network starts from: the encoder's weights, or for
    ``init: scratch`` only its architecture (a scratch segmenter takes nothing else from it)."""
    config, init = identity(cfg.to_dict()), None
    if cfg.encoder and ae is not None:
        init = weights_sha256(cfg.encoder) if cfg.init == "pretrained" else ae.spec
        config["encoder"] = "see init"  # not its path: a run folder moved elsewhere is the same run
    parts = [t for s in (splits.train, splits.val, splits.test) for t in
             ((s.images, s.masks) if s is not None else (None, None))]
    return run_key(config, data=fingerprint(*parts), init=init)


def validator(classes: list[str]) -> Validate:
    """The segmenter's validation pass (the engine's :data:`Validate`): the loss terms and
    ``SEG_SCORES`` (over the whole split, as the test is scored) from the same logits, once per
    epoch, so that ``train.monitor: miou`` keeps the epoch that segments best, not the one with the
    lowest loss (the two disagree once the loss rewards confidence). The terms are averaged over
    the validation batches as the engine averages them (:class:`TermMeans`)."""
    @torch.no_grad()
    def validate(seg: nn.Module, val: Batches) -> Validation:
        assert isinstance(seg, Segmenter)
        was_training = seg.training
        seg.eval()
        metrics, terms = SegMetrics(classes), TermMeans()
        for x, masks in val.epoch(0):
            logits = seg.logits(x)
            terms.add(seg.loss_fn(logits, masks), len(x))
            scores = seg.scores(x) if seg.tta else logits  # scored as the test is: with its flips
            metrics.update(scores.argmax(dim=1).cpu(), masks.cpu())
        seg.train(was_training)
        scores = metrics.compute()
        return Validation(terms.means(), {k: scores[k] for k in SEG_SCORES})
    return validate


def fit_record(fit: FitResult, *, validated: bool) -> dict[str, Any]:
    """The fit as ``metrics.json`` records it, named for what it is: without a validation split
    the engine monitors the training loss, so its ``best_val_loss`` is written ``best_train_loss``;
    ``monitored`` says what picked ``best_epoch`` (without validation the weights kept are the
    last epoch's)."""
    record = {k: v for k, v in fit.to_dict().items() if k != "history"}
    if not validated:
        record["best_train_loss"] = record.pop("best_val_loss")
    return record


def fit_fields(record: dict[str, Any]) -> dict[str, Any]:
    """:func:`fit_record` (or an earlier version's plain fit) -> :class:`FitResult`'s fields."""
    fields = {k: v for k, v in record.items() if k != "best_train_loss"}
    if "best_train_loss" in record:
        fields["best_val_loss"] = record["best_train_loss"]
    return fields


def read_back(out_dir: Path, cfg: SegmentConfig) -> SegmentResult:
    """The identical run already finished in ``out_dir``: its segmenter and its scores, as trained."""
    m = read_json(out_dir / "metrics.json", "segmentation metrics")
    fit = FitResult(**{**fit_fields(m["fit"]), "history": m["history"]})
    timing = {k: m.get(k) for k in ("wall_seconds", "cpu_seconds", "resumed")}
    return SegmentResult(load_segmenter(out_dir), out_dir, m["test"], fit, cfg, reused=True, timing=timing)


def prepared_segmenter(cfg: SegmentConfig, ae: Autoencoder | None, train: SegSet) -> Segmenter:
    """The segmenter with its loss, and how its pretrained parts are held still or slowed down."""
    seg = make_segmenter(cfg, ae, train)
    seg.loss_fn = make_loss(cfg, train)
    if cfg.init == "pretrained":  # scratch has nothing pretrained to hold still or slow down
        seg.freeze_epochs, seg.pretrained_lr_scale = cfg.freeze_epochs, cfg.pretrained_lr_scale
        if cfg.freeze_decoder and not seg.decoder_pretrained:
            raise ConfigError("freeze_decoder", True, "false: this decoder is new (only a 'unet' "
                              "autoencoder brings a pretrained one)")
        seg.freeze_decoder, seg.freeze_norm = cfg.freeze_decoder, cfg.freeze_norm
    return seg


def epoch_images(cfg: SegmentConfig, splits: SegSplits) -> int:
    """Images an epoch draws: ``epoch_images``, else as many as the training split holds, masked
    or not: ten masks of a 120-photo split train on 120 image draws an epoch, as all 120 masks do,
    so that the optimiser steps do not collapse with the mask count."""
    return cfg.epoch_images if cfg.epoch_images is not None else len(splits.train)


def check_learnable(train: SegSet) -> None:
    """Refuse masks with fewer than two classes present (all background, or all unknown)."""
    counts = train.pixel_counts()
    present = [c for c, n in zip(train.classes, counts.tolist(), strict=True) if n]
    if len(present) < 2:
        unknown = int((train.masks == IGNORE_INDEX).sum())
        raise AevisionError(f"data: the {len(train)} training masks of {train.name or 'the data'} hold "
                            f"{'only class ' + repr(present[0]) if present else 'no known pixel'} "
                            f"({unknown} pixels unknown, {IGNORE_INDEX}): nothing to learn (a mask needs "
                            f"at least two classes; binary masks: 0/1 or 0/255)")


def segment_batches(cfg: SegmentConfig, train: SegSet, val: SegSet | None, images: int | None = None
                    ) -> tuple[TensorBatches, TensorBatches | None]:
    """Training batches (``images`` draws an epoch, cycling a smaller labelled set; default one pass;
    augmented), and validation batches in order."""
    augment = SegAugment(cfg.augment)
    bs = cfg.train.batch_size
    train_batches = TensorBatches(train.images, bs, seed=cfg.seed, shuffle=True, drop_last=True,
                                  targets=train.masks, transform=augment if augment.active else None,
                                  epoch_size=images)
    val_batches = (TensorBatches(val.images, max(bs, VAL_BATCH_SIZE), shuffle=False, targets=val.masks)
                   if val is not None else None)
    return train_batches, val_batches


def _load(cfg: SegmentConfig, ae: Autoencoder | None) -> SegSplits:
    """The dataset, converted to the encoder's channel count unless the config says otherwise."""
    data_cfg = cfg.data
    if ae is not None and data_cfg.channels is None:
        data_cfg = dataclasses.replace(data_cfg, channels=int(ae.input_shape[0]))
    return load_segmentation(data_cfg, cfg.seed)


def labelled(train: SegSet, labels: int | None, seed: int) -> SegSet:
    """The ``labels`` training images whose masks are used (a seeded choice), or all of them."""
    if labels is None:
        return train
    if labels > len(train):
        raise ConfigError("labels", labels, f"at most the {len(train)} training images")
    return train.subset(permutation(len(train), seed, 53)[:labels].sort().values)


def make_segmenter(cfg: SegmentConfig, ae: Autoencoder | None, train: SegSet) -> Segmenter:
    """The pretrained encoder's weights (init: pretrained) or its architecture freshly initialised
    (init: scratch); without a model folder, ``cfg.arch`` built for the data's image size."""
    if ae is not None:
        if int(ae.input_shape[0]) != train.image_shape[0]:
            raise AevisionError(f"encoder: the model takes {ae.input_shape[0]}-channel images, the data "
                                f"has {train.image_shape[0]} channels (set data.channels)")
        encoder, spec = encoder_from_autoencoder(ae)
        if cfg.init == "scratch":
            encoder = feature_encoder(spec["name"], spec["input_shape"], spec["options"])
    else:
        spec = {"name": cfg.arch.name, "options": dict(cfg.arch.options),
                "input_shape": list(train.image_shape)}
        encoder = feature_encoder(spec["name"], spec["input_shape"], spec["options"])
    d = cfg.decoder
    pretrained = pretrained_decoder(ae)
    if pretrained is not None:
        check_decoder_matches(cfg, pretrained)
    channels = d.channels if d.channels is not None or pretrained is None else pretrained.widths
    seg = build_segmenter(encoder, spec, input_shape=train.image_shape, classes=train.classes,
                          palette=train.palette or [], decoder_channels=channels,
                          stem_channels=d.stem_channels, batch_norm=d.batch_norm, tta=cfg.tta)
    if pretrained is not None and cfg.init == "pretrained" and cfg.pretrained_decoder:
        seg.decoder.load_state_dict(pretrained.state_dict())
        seg.decoder_pretrained = True
    return seg


def pretrained_decoder(ae: Autoencoder | None) -> UNetDecoder | None:
    """The U-Net decoder of a ``unet`` autoencoder (which the segmenter takes over), else None."""
    unet = getattr(getattr(ae, "decoder", None), "unet", None)
    return unet if isinstance(unet, UNetDecoder) else None


def check_decoder_matches(cfg: SegmentConfig, pretrained: UNetDecoder) -> None:
    """A ``unet`` autoencoder fixes the segmenter's decoder architecture (for both inits, so that
    scratch trains the same network): the ``decoder`` section must agree with it."""
    d = cfg.decoder
    wanted = "the 'unet' autoencoder's decoder, which the segmenter takes over"
    if d.channels is not None and list(d.channels) != pretrained.widths:
        raise ConfigError("decoder.channels", d.channels, f"{pretrained.widths} ({wanted}) or null")
    if d.stem_channels != pretrained.stem_channels:
        raise ConfigError("decoder.stem_channels", d.stem_channels, f"{pretrained.stem_channels} ({wanted})")
    if d.batch_norm != pretrained.batch_norm:
        raise ConfigError("decoder.batch_norm", d.batch_norm, f"{pretrained.batch_norm} ({wanted})")


def make_loss(cfg: SegmentConfig, train: SegSet) -> SegLoss:
    weights = cfg.loss.class_weights
    if weights == "balanced":
        weights = balanced_weights(train.pixel_counts())
    elif isinstance(weights, list) and len(weights) != train.num_classes:
        raise ConfigError("loss.class_weights", weights, f"{train.num_classes} weights, one per class "
                          f"({', '.join(train.classes)}), or 'balanced'")
    return SegLoss(train.num_classes, ce_weight=cfg.loss.ce_weight, dice_weight=cfg.loss.dice_weight,
                   class_weights=weights)


@torch.no_grad()
def predict_set(seg: Segmenter, data: SegSet, device: Any = "cpu", batch_size: int = 64) -> Tensor:
    """(N, H, W) uint8 predicted class ids for every image of ``data``."""
    seg = seg.to(device).eval()
    out = [seg.predict(to_float(chunk).to(device)).to(torch.uint8).cpu()
           for chunk in data.images.split(batch_size)]
    return torch.cat(out)


def score(preds: Tensor, data: SegSet) -> dict[str, Any]:
    m = SegMetrics(data.classes)
    m.update(preds, data.masks)
    return m.compute()


def write_examples(out_dir: Path, data: SegSet, preds: Tensor, count: int | None) -> None:
    """Predicted masks (palette PNG) and overlays of the first ``count`` test images, plus a sheet."""
    n = len(data) if count is None else min(count, len(data))
    palette = data.palette or []
    for i in range(n):
        stem = Path(data.files[i]).stem if data.files else f"test_{i:04d}"
        save_mask(out_dir / "predictions" / f"{stem}.png", preds[i], palette)
        save_overlay(out_dir / "overlays" / f"{stem}.png", data.images[i], preds[i], palette)
    if n:
        k = min(n, 8)
        example_sheet(out_dir / "examples.png", data.images[:k], data.masks[:k], preds[:k], palette)


def data_summary(splits: SegSplits, train: SegSet, cfg: SegmentConfig) -> dict[str, Any]:
    def one(s: SegSet | None) -> dict[str, Any] | None:
        return None if s is None else {"images": len(s), "image_shape": list(s.image_shape)}

    return {
        "name": splits.train.name,
        "classes": splits.train.classes,
        "train": one(splits.train), "val": one(splits.val), "test": one(splits.test),
        "labelled_train_images": len(train),
        "epoch_images": epoch_images(cfg, splits),
        "train_class_pixels": dict(zip(train.classes, train.pixel_counts().tolist(), strict=True)),
        "skipped_files": [{"path": s.path, "reason": s.reason} for s in splits.train.skipped],
    }


def encoder_summary(cfg: SegmentConfig, ae: Autoencoder | None, config: dict[str, Any]) -> dict[str, Any]:
    """What the encoder brought and how it was held; ``config``: :func:`identity` of ``cfg``."""
    spec = getattr(ae, "spec", None) or {}
    return {
        "init": cfg.init,
        "path": cfg.encoder,
        "architecture": spec.get("name", cfg.arch.name),
        "options": spec.get("options", cfg.arch.options),
        "regularizers": spec.get("regularizers", []),
        **{k: config[k] for k in ("freeze_epochs", "freeze_decoder", "freeze_norm", "pretrained_lr_scale")},
        "decoder": ("pretrained" if cfg.init == "pretrained" and cfg.pretrained_decoder
                    and pretrained_decoder(ae) is not None else "random"),
    }
