"""kNN with cosine similarity: the same answers as scikit-learn, and the vote weights it promises."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier

from aevision.errors import AevisionError
from aevision.tasks.knn import KNNClassifier


def _toy(n_train=120, n_test=80, d=6, k=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, d, generator=g) * 1.5
    y = torch.randint(0, k, (n_train + n_test,), generator=g)
    x = centres[y] + torch.randn(n_train + n_test, d, generator=g)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


@pytest.mark.parametrize("weights", ["uniform", "distance"])
@pytest.mark.parametrize("k", [1, 5, 20])
def test_matches_sklearn_cosine_neighbours(weights, k):
    xt, yt, xq, _ = _toy()
    ours = KNNClassifier(k=k, weights=weights).fit(xt, yt, n_classes=4)
    ref = KNeighborsClassifier(n_neighbors=k, metric="cosine", weights=weights, algorithm="brute")
    ref.fit(xt.numpy(), yt.numpy())
    np.testing.assert_allclose(ours.predict_proba(xq).numpy(), ref.predict_proba(xq.numpy()), atol=1e-5)
    assert torch.equal(ours.predict(xq), torch.from_numpy(ref.predict(xq.numpy())))


def test_exp_weights_follow_their_formula_and_chunks_do_not_matter():
    xt, yt, xq, _ = _toy()
    clf = KNNClassifier(k=7, weights="exp", temperature=0.1).fit(xt, yt, n_classes=4)
    q = torch.nn.functional.normalize(xq[:1], dim=1)
    sim = (q @ torch.nn.functional.normalize(xt, dim=1).T)[0]
    top = sim.topk(7)
    votes = torch.zeros(4).index_add_(0, yt[top.indices], torch.exp(top.values / 0.1))
    assert torch.allclose(clf.predict_proba(xq[:1])[0], votes / votes.sum(), atol=1e-6)
    small = KNNClassifier(k=7, weights="exp", temperature=0.1, chunk=3).fit(xt, yt, n_classes=4)
    assert torch.allclose(small.predict_proba(xq), clf.predict_proba(xq), atol=1e-6)


def test_knn_separates_clusters_and_handles_small_training_sets():
    xt, yt, xq, yq = _toy(seed=1)
    assert KNNClassifier().fit(xt, yt).score(xq, yq) > 0.8
    tiny = KNNClassifier(k=20).fit(xt[:3], yt[:3], n_classes=4)  # k larger than the set
    assert tiny.predict(xq).shape == (80,)
    with pytest.raises(AevisionError, match=r"knn\.k"):
        KNNClassifier(k=0).fit(xt, yt)
