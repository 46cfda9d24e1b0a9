"""Anomaly scores from an autoencoder trained on normal images only: higher = more anomalous.

Two readings of "this image is unlike the training images":

- reconstruction error: the autoencoder only learned to reproduce what it saw, so an image from
  elsewhere comes back worse (per-image mean of the model's own reconstruction loss);
- latent density: its code lands where the training codes are sparse. :class:`CodeDensity` fits
  a density on the codes of normal (reference) images and scores by negative log-density:
  ``gaussian`` (one full-covariance Gaussian with Ledoit-Wolf shrinkage: the Mahalanobis
  distance), ``gmm`` (a Gaussian mixture), or ``knn`` (mean distance to the k nearest reference
  codes, a non-parametric density; Euclidean, or cosine on the code directions).

:func:`auroc` is the threshold-free measure of how well a score separates anomalies from normal
images (torchmetrics).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from aevision.data.imageset import float_batches
from aevision.data.splits import permutation
from aevision.errors import AevisionError, ConfigError
from aevision.models import Autoencoder
from aevision.models.inference import eval_mode

Density = Literal["gaussian", "gmm", "knn"]
SCORES: tuple[str, ...] = ("recon", "gaussian", "gmm", "knn")


@torch.no_grad()
def reconstruction_error(model: Autoencoder, images: Any, batch_size: int = 1024) -> Tensor:
    """Per-image mean reconstruction loss (the model's own: mse, bce or l1) of the input's
    reconstruction from its (deterministic) code: (N,)."""
    x_all = images.images if hasattr(images, "images") else torch.as_tensor(images)
    model.check_input(x_all)
    device = next(model.parameters()).device
    out: list[Tensor] = []
    with eval_mode(model):
        for x in float_batches(x_all, batch_size, device):
            target = x if model.target is None else model.target(x)
            x_hat = model.reconstruct(x).float()
            if model.reconstruction == "bce":
                err = F.binary_cross_entropy(x_hat.clamp(0, 1), target.float(), reduction="none")
            elif model.reconstruction == "l1":
                err = (x_hat - target).abs()
            else:
                err = (x_hat - target).pow(2)
            out.append(err.flatten(1).mean(dim=1).cpu())
    return torch.cat(out) if out else torch.empty(0)


@dataclass
class CodeDensity:
    """A density of normal codes; ``score(z)`` is an anomaly score (higher = less likely).

    ``gaussian`` scores the squared Mahalanobis distance (= -2 log p up to a constant),
    ``gmm`` the negative log-likelihood under ``components`` Gaussians (``covariance`` type as in
    scikit-learn), ``knn`` the mean distance to the ``k`` nearest reference codes (``metric``
    ``l2`` or ``cosine``: 1 - cosine similarity, blind to the code's norm). The parametric kinds
    are fitted on at most ``max_fit`` reference codes (a seeded random subset): EM on a large
    gallery costs minutes and gains nothing measurable; ``knn`` keeps every reference code.
    """

    kind: Density = "gaussian"
    k: int = 5
    metric: Literal["l2", "cosine"] = "l2"
    components: int = 10
    covariance: Literal["full", "diag", "tied", "spherical"] = "full"
    seed: int = 0
    max_fit: int | None = 20000
    state_: dict[str, Any] = field(init=False, default_factory=dict, repr=False)

    def fit(self, codes: Tensor) -> CodeDensity:
        z = torch.as_tensor(codes).double()
        if z.dim() != 2 or len(z) < 2:
            raise AevisionError(f"CodeDensity.fit: need (N >= 2, D) codes, got shape {tuple(z.shape)}")
        if self.kind != "knn" and self.max_fit is not None and len(z) > self.max_fit:
            z = z[permutation(len(z), self.seed, 61)[: self.max_fit]]
        if self.kind == "gaussian":
            from sklearn.covariance import LedoitWolf

            lw = LedoitWolf().fit(z.numpy())
            self.state_ = {"mean": torch.from_numpy(lw.location_),
                           "precision": torch.from_numpy(lw.precision_)}
        elif self.kind == "gmm":
            from sklearn.mixture import GaussianMixture

            if not 1 <= self.components <= len(z):
                raise ConfigError("gmm components", self.components, f"1..{len(z)}")
            gmm = GaussianMixture(self.components, covariance_type=self.covariance, reg_covar=1e-4,
                                  random_state=self.seed, n_init=1, max_iter=200)
            self.state_ = {"gmm": gmm.fit(z.numpy())}
        elif self.kind == "knn":
            from aevision.tasks.retrieval import GalleryIndex

            if not 1 <= self.k <= len(z):
                raise ConfigError("knn k", self.k, f"1..{len(z)}")
            self.state_ = {"index": GalleryIndex.build(z.float(), metric=self.metric)}
        else:
            raise ConfigError("density kind", self.kind, "gaussian, gmm or knn")
        return self

    def score(self, codes: Tensor, exclude_self: bool = False) -> Tensor:
        """Anomaly scores of ``codes`` (N, D): (N,). ``exclude_self`` (knn only) skips each
        code's nearest neighbour, for scoring the reference codes themselves."""
        if not self.state_:
            raise RuntimeError("CodeDensity.score called before fit")
        z = torch.as_tensor(codes).double()
        if self.kind == "gaussian":
            d = z - self.state_["mean"]
            return ((d @ self.state_["precision"]) * d).sum(dim=1).float()
        if self.kind == "gmm":
            return torch.from_numpy(-self.state_["gmm"].score_samples(z.numpy())).float()
        extra = 1 if exclude_self else 0
        found = self.state_["index"].search(z.float(), self.k + extra)
        return torch.from_numpy(found.distances[:, extra:].mean(axis=1)).float()


def auroc(scores: Tensor | np.ndarray | Sequence[float], is_anomaly: Tensor | np.ndarray | Sequence[int]
          ) -> float:
    """Area under the ROC curve of ``scores`` for telling anomalies (1) from normal images (0)."""
    from torchmetrics.functional.classification import binary_auroc

    s = torch.as_tensor(np.asarray(scores), dtype=torch.float32).flatten()
    y = torch.as_tensor(np.asarray(is_anomaly)).long().flatten()
    if len(s) != len(y):
        raise AevisionError(f"auroc: {len(s)} scores but {len(y)} labels")
    if not bool(((y == 0) | (y == 1)).all()):
        raise AevisionError("auroc: labels must be 0 (normal) or 1 (anomaly)")
    if int(y.sum()) in (0, len(y)):
        raise AevisionError("auroc: needs both normal and anomalous examples")
    if not bool(torch.isfinite(s).all()):
        raise AevisionError("auroc: scores contain NaN or inf")
    return float(binary_auroc(s, y))
