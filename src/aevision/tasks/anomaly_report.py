"""Scoring images against normal reference images: what ``aevision anomaly`` runs.

:func:`score_images` scores images with :mod:`aevision.tasks.anomaly` (reconstruction error or a
code density) and thresholds them: with the threshold :func:`calibrate` stored beside the model
(split conformal on held-out normal images, a chosen false-positive rate), else at a quantile of
the reference images' own scores; the reference is given, or is exactly the training set the
model was pretrained on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from aevision.data import load_dataset
from aevision.data.imageset import ImageSet
from aevision.data.sources import SourceSpec, load_source, resolved
from aevision.data.splits import limited
from aevision.errors import AevisionError
from aevision.models import Autoencoder
from aevision.models.inference import encode
from aevision.models.io import saved_run, trained_on
from aevision.tasks.anomaly import CodeDensity, reconstruction_error
from aevision.tasks.calibration import Threshold, stored_threshold


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
    rule: str | None = None  # how the threshold was set

    @property
    def flagged(self) -> int | None:
        return int((self.scores > self.threshold).sum()) if self.threshold is not None else None

    def rows(self) -> list[dict[str, Any]]:
        """One CSV row per image: name, score, flagged and the threshold used (when there is one),
        label (when known)."""
        rows = []
        for i, name in enumerate(self.names):
            row: dict[str, Any] = {"image": name, "score": float(self.scores[i])}
            if self.threshold is not None:
                row["anomalous"] = int(self.scores[i] > self.threshold)
                row["threshold"] = self.threshold
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
    run_seed = saved_run(model_path)[1]
    images = load_dataset(cfg, run_seed).train
    if limit is not None and limit < len(images):
        images = images.subset(limited(len(images), limit, run_seed))
    return images, f"{cfg.name} (the model's training set)"


@dataclass
class ScoreSpec:
    """Which score, and against which normal reference images: what a stored threshold is for."""

    score: str = "recon"
    reference: str | None = None
    reference_limit: int | None = None
    data_root: str | None = None
    seed: int = 0
    k: int = 5
    metric: str = "l2"
    components: int = 10

    def definition(self) -> dict[str, Any]:
        """What the score's values depend on besides the model (where the data lives does not)."""
        if self.score == "recon":
            return {"score": "recon"}
        options = {"knn": {"k": self.k, "metric": self.metric},
                   "gmm": {"components": self.components}}.get(self.score, {})
        ref = {"reference": resolved(self.reference) if self.reference else "training set",
               "reference_limit": self.reference_limit, "seed": self.seed}
        return {"score": self.score, **options, **ref}


@dataclass
class Scorer:
    """Scores images (``__call__``: ImageSet -> (N,)) with the reference's own scores, if any."""

    model: Autoencoder
    density: CodeDensity | None
    reference: str
    reference_size: int | None
    reference_scores: Tensor | None
    batch_size: int = 512
    device: str = "cpu"
    note: str | None = None

    def __call__(self, data: ImageSet | Tensor) -> Tensor:
        if self.density is None:
            return reconstruction_error(self.model, data, self.batch_size)
        return self.density.score(encode(self.model, data, self.batch_size, self.device))


def make_scorer(model: Autoencoder, model_path: str | os.PathLike[str], spec: ScoreSpec, *,
                with_reference: bool = True, batch_size: int = 512, device: str = "cpu") -> Scorer:
    """The scorer of ``spec`` ('recon' or a code density fitted on the reference images, see
    :func:`load_reference`); 'recon' goes on without reference images (no reference scores), and
    does not load them unless ``with_reference``."""
    note, found = None, None
    if with_reference or spec.score != "recon":
        try:
            found = load_reference(model_path, model, spec.reference, spec.data_root, spec.seed,
                                   spec.reference_limit)
        except AevisionError as e:
            if spec.reference or spec.score != "recon":
                raise
            note = f"no reference images, so no threshold ({e})"
    if found is None and spec.score != "recon":
        raise AevisionError(f"--score {spec.score}: needs --reference DATA (normal images); the "
                            f"model's config does not say what it was trained on")
    ref, ref_name = found if found is not None else (None, "none")
    scorer = Scorer(model, None, ref_name, len(ref) if ref is not None else None, None, batch_size,
                    device, note)
    if spec.score == "recon":
        scorer.reference_scores = scorer(ref) if ref is not None else None
        return scorer
    assert ref is not None
    density = CodeDensity(spec.score, k=spec.k, metric=spec.metric,  # type: ignore[arg-type]
                          components=spec.components, seed=spec.seed)
    ref_codes = encode(model, ref, batch_size, device)
    scorer.density = density.fit(ref_codes)
    scorer.reference_scores = density.score(ref_codes, exclude_self=True)
    return scorer


def score_images(model: Autoencoder, model_path: str | os.PathLike[str], data: ImageSet,
                 **options: Any) -> AnomalyScores:
    """Score ``data`` with ``options``' score ('recon' or a code density: gaussian, gmm, knn)
    against the reference images (see :func:`thresholded_scorer`)."""
    scorer, threshold, rule = thresholded_scorer(model, model_path, **options)
    scores = scorer(data)
    names = data.files or [str(i) for i in range(len(data))]
    return AnomalyScores(scores, scores.argsort(descending=True), names, data.labels, threshold,
                         scorer.reference, scorer.reference_size, scorer.note, rule)


def thresholded_scorer(model: Autoencoder, model_path: str | os.PathLike[str], *, quantile: float = 0.99,
                       batch_size: int = 512, device: str = "cpu", **score: Any
                       ) -> tuple[Scorer, float | None, str | None]:
    """The scorer (:func:`make_scorer`) of ``score`` (the fields of :class:`ScoreSpec`), its
    threshold and the rule that set it: the one calibrated for this model and score
    (``threshold.json``, :mod:`aevision.tasks.calibration`) when there is one, else the
    ``quantile`` of the reference images' own scores; 'recon' without either is unthresholded."""
    spec = ScoreSpec(**score)
    calibrated = stored_threshold(model_path)
    if calibrated is not None and calibrated.score != spec.definition():
        calibrated = None  # calibrated for another score: it says nothing about this one
    scorer = make_scorer(model, model_path, spec, with_reference=calibrated is None,
                         batch_size=batch_size, device=device)
    if calibrated is not None:
        return scorer, calibrated.threshold, calibrated.rule()
    if scorer.reference_scores is not None:
        return scorer, float(scorer.reference_scores.quantile(quantile)), f"reference {quantile:g} quantile"
    return scorer, None, None


def calibrate(model: Autoencoder, model_path: str | os.PathLike[str], normal: ImageSet, *, fpr: float,
              source: str, batch_size: int = 512, device: str = "cpu", **score: Any) -> Threshold:
    """Calibrate the threshold of ``score`` (the fields of :class:`ScoreSpec`, as
    :func:`score_images` takes them) on ``normal`` images (``source``: where they came from) for
    a false-positive rate of ``fpr``, and store it beside the model
    (:mod:`aevision.tasks.calibration`). The images must be normal and must not have been trained
    on (their scores would be too low, and the rate too high)."""
    spec = ScoreSpec(**score)
    scorer = make_scorer(model, model_path, spec, with_reference=False, batch_size=batch_size,
                         device=device)
    found = Threshold.fit(scorer(normal), fpr, spec.definition(), model_path, source)
    found.save(model_path)
    return found


def score_stream(model: Autoencoder, model_path: str | os.PathLike[str], source: Any, *, workers: int = 2,
                 **options: Any) -> AnomalyScores:
    """Score a streamed input (:class:`aevision.tasks.streamed_features.StreamedInput`: a folder
    or shards larger than memory) batch by batch; each score named by its file."""
    scorer, threshold, rule = thresholded_scorer(model, model_path, **options)
    files = source.files()
    parts, names, labels = [], [], []
    for raw in source.batches(options.get("batch_size", 512), workers):
        parts.append(scorer(raw["image"]))
        names += [files[i] for i in raw["index"].tolist()]
        labels.append(raw["label"])
    scores = torch.cat(parts) if parts else torch.empty(0)
    label_tensor = torch.cat(labels).long() if labels and bool((torch.cat(labels) >= 0).all()) else None
    return AnomalyScores(scores, scores.argsort(descending=True), names, label_tensor, threshold,
                         scorer.reference, scorer.reference_size, scorer.note, rule)


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
