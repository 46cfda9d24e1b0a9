"""Scoring images against normal reference images: what ``aevision anomaly`` runs.

:func:`score_images` scores images with :mod:`aevision.tasks.anomaly` (reconstruction error or a
code density) and sets a threshold at a quantile of the reference images' own scores; the
reference is given, or is exactly the training set the model was pretrained on.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from aevision.data import load_dataset
from aevision.data.imageset import ImageSet
from aevision.data.sources import SourceSpec, load_source, resolved
from aevision.errors import AevisionError
from aevision.models import Autoencoder
from aevision.models.inference import encode
from aevision.models.io import saved_run, trained_on
from aevision.tasks.anomaly import CodeDensity, reconstruction_error


@dataclass
class AnomalyScores:
    """``scores`` of every image (higher = more anomalous), ``order`` most anomalous first; the
    ``threshold`` (None without reference images: ``note`` says why) and the reference used."""

    scores: Tensor
    order: Tensor
    names: list[str]
    labels: Tensor | None
    threshold: float | None
    reference: str
    reference_size: int | None
    note: str | None = None

    @property
    def flagged(self) -> int | None:
        return int((self.scores > self.threshold).sum()) if self.threshold is not None else None

    def rows(self) -> list[dict[str, Any]]:
        """One CSV row per image: name, score, flagged (with a threshold), label (when known)."""
        rows = []
        for i, name in enumerate(self.names):
            row: dict[str, Any] = {"image": name, "score": float(self.scores[i])}
            if self.threshold is not None:
                row["anomalous"] = int(self.scores[i] > self.threshold)
            if self.labels is not None:
                row["label"] = int(self.labels[i])
            rows.append(row)
        return rows


def load_reference(model_path: str | os.PathLike[str], model: Autoencoder, reference: str | None = None,
                   data_root: str | None = None, seed: int = 0,
                   limit: int | None = None) -> tuple[ImageSet, str] | None:
    """The normal images and their name: ``reference`` (a dataset name or an image folder), or
    exactly the training images the model was pretrained on (its config.json: dataset, options,
    limit, seed; validation held out); None when the model's config does not say."""
    c, h, w = model.input_shape
    if reference:
        spec = SourceSpec(resolved(reference), "train", data_root, seed, limit)
        return load_source(spec, c, (h, w)), reference
    cfg = trained_on(model_path)
    if cfg is None:
        return None
    cfg.root = data_root or cfg.root
    cfg.channels, cfg.image_size = c, [h, w]
    images = load_dataset(cfg, saved_run(model_path)[1]).train
    if limit is not None and limit < len(images):
        images = images.subset(range(limit))
    return images, f"{cfg.name} (the model's training set)"


@dataclass
class Scorer:
    """Scores images ((N, C, H, W) uint8) against the reference: the threshold and its source."""

    score: Callable[[Tensor], Tensor]
    threshold: float | None
    reference: str
    reference_size: int | None
    note: str | None = None


def reference_scorer(model: Autoencoder, model_path: str | os.PathLike[str], *, score: str = "recon",
                     reference: str | None = None, reference_limit: int | None = None,
                     data_root: str | None = None, seed: int = 0, k: int = 5, metric: str = "l2",
                     components: int = 10, quantile: float = 0.99, batch_size: int = 512,
                     device: str = "cpu") -> Scorer:
    """``score`` ('recon' or a code density: gaussian, gmm, knn) fitted to the reference images
    (see :func:`load_reference`), the threshold at their ``quantile``; 'recon' goes on without
    them, unthresholded."""
    note = None
    try:
        found = load_reference(model_path, model, reference, data_root, seed, reference_limit)
    except AevisionError as e:
        if reference or score != "recon":
            raise
        note, found = f"no reference images, so no threshold ({e})", None
    if found is None and score != "recon":
        raise AevisionError(f"--score {score}: needs --reference DATA (normal images); the "
                            f"model's config does not say what it was trained on")
    ref, ref_name = found if found is not None else (None, "none")
    if score == "recon":
        def fn(images: Tensor) -> Tensor:
            return reconstruction_error(model, images, batch_size)

        ref_scores = fn(ref.images) if ref is not None else None
    else:
        assert ref is not None
        density = CodeDensity(score, k=k, metric=metric, components=components, seed=seed)
        ref_codes = encode(model, ref, batch_size, device)
        density.fit(ref_codes)

        def fn(images: Tensor) -> Tensor:
            return density.score(encode(model, images, batch_size, device))

        ref_scores = density.score(ref_codes, exclude_self=True)
    threshold = float(ref_scores.quantile(quantile)) if ref_scores is not None else None
    return Scorer(fn, threshold, ref_name, len(ref) if ref is not None else None, note)


def score_images(model: Autoencoder, model_path: str | os.PathLike[str], data: ImageSet,
                 **options: Any) -> AnomalyScores:
    """Score ``data`` against the reference images (``options``: :func:`reference_scorer`'s)."""
    scorer = reference_scorer(model, model_path, **options)
    scores = scorer.score(data.images)
    names = data.files or [str(i) for i in range(len(data))]
    return AnomalyScores(scores, scores.argsort(descending=True), names, data.labels, scorer.threshold,
                         scorer.reference, scorer.reference_size, scorer.note)


def score_stream(model: Autoencoder, model_path: str | os.PathLike[str], source: Any, *, workers: int = 2,
                 **options: Any) -> AnomalyScores:
    """Score a streamed input (:class:`aevision.tasks.streamed_features.StreamedInput`: a folder
    or shards larger than memory) batch by batch; each score named by its file."""
    scorer = reference_scorer(model, model_path, **options)
    files = source.files()
    parts, names, labels = [], [], []
    for raw in source.batches(options.get("batch_size", 512), workers):
        parts.append(scorer.score(raw["image"]))
        names += [files[i] for i in raw["index"].tolist()]
        labels.append(raw["label"])
    scores = torch.cat(parts) if parts else torch.empty(0)
    label_tensor = torch.cat(labels).long() if labels and bool((torch.cat(labels) >= 0).all()) else None
    return AnomalyScores(scores, scores.argsort(descending=True), names, label_tensor, scorer.threshold,
                         scorer.reference, scorer.reference_size, scorer.note)


def save_top_grid(path: str | Path, data: ImageSet, result: AnomalyScores, top: int | None) -> None:
    """Thumbnails of the ``top`` most anomalous images of ``data``, 8 per row (``top`` None:
    ``data`` holds just those, in order: :func:`top_images`)."""
    from aevision.report.plots import image_grid, save_image

    images = data.floats(result.order[:top]) if top is not None else data.floats()
    save_image(path, image_grid(list(images.split(8)), scale=max(1, 64 // data.image_shape[1])))


def top_images(result: AnomalyScores, model: Autoencoder, top: int) -> ImageSet:
    """The ``top`` most anomalous images of a streamed input, read back from their files."""
    from aevision.data.images import read_image

    c, h, w = model.input_shape
    names = [result.names[i] for i in result.order[:top].tolist()]
    return ImageSet(torch.stack([read_image(n, c, (h, w)) for n in names]), files=names)
