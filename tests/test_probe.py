"""The linear probe: correct, and blind to test data while choosing its regularisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from aevision.errors import ConfigError
from aevision.tasks.probe import LinearProbe, Standardizer, fit_logistic


def _blobs(n, d=5, k=3, seed=0, noise=1.0):
    """Gaussian blobs around k fixed centres; ``seed`` draws the samples."""
    centres = torch.randn(k, d, generator=torch.Generator().manual_seed(1234)) * 2
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % k
    return centres[y] + noise * torch.randn(n, d, generator=g), y


def test_logistic_matches_sklearn_objective():
    x, y = _blobs(300)
    xs = Standardizer.fit(x)(x)
    w, b = fit_logistic(xs, y, 3, c=0.5, max_iter=500)
    ref = LogisticRegression(C=0.5, max_iter=2000, tol=1e-10).fit(xs.numpy(), y.numpy())
    np.testing.assert_allclose((xs @ w + b).softmax(1).numpy(), ref.predict_proba(xs.numpy()),
                               atol=2e-3)


def test_c_is_chosen_on_validation_only():
    """Same train and validation data, wildly different test sets: the choice must not move."""
    x, y = _blobs(120, seed=1, noise=2.0)
    xv, yv = _blobs(60, seed=2, noise=2.0)
    choices = set()
    for seed in range(3):
        probe = LinearProbe().fit(x, y, xv, yv)
        xt, yt = _blobs(50, seed=10 + seed, noise=5.0)
        probe.score(xt, yt)  # scoring on test must not touch the fitted state
        choices.add(probe.c_)
    assert len(choices) == 1
    assert set(LinearProbe().fit(x, y, xv, yv).selection_) == set(LinearProbe().c_grid)


def test_validation_labels_pick_the_best_c():
    x, y = _blobs(200, seed=3, noise=1.5)
    xv, yv = _blobs(200, seed=4, noise=1.5)
    probe = LinearProbe(c_grid=(1e-4, 1.0)).fit(x, y, xv, yv)
    assert probe.c_ == 1.0  # 1e-4 shrinks everything to chance
    assert probe.selection_[1.0] > probe.selection_[1e-4]


def test_cross_validation_when_no_validation_split():
    x, y = _blobs(60, seed=5)
    probe = LinearProbe().fit(x, y)
    assert len(probe.selection_) == len(probe.c_grid)
    assert probe.score(*_blobs(300, seed=5)) > 0.8


def test_one_label_per_class_falls_back_to_default_c():
    x, y = _blobs(3, seed=6)
    probe = LinearProbe().fit(x, y)
    assert probe.c_ == 1.0


@pytest.mark.parametrize("constant_column", [True])
def test_constant_features_do_not_break_standardisation(constant_column):
    x, y = _blobs(90)
    x[:, 0] = 3.0
    assert torch.isfinite(LinearProbe().fit(x, y).decision_function(x)).all()


def test_a_one_value_grid_is_the_choice_with_or_without_validation_data():
    x, y = _blobs(60, seed=7)
    probe = LinearProbe(c_grid=(0.001,)).fit(x, y)
    assert probe.c_ == 0.001 and list(probe.selection_) == [0.001]
    w, b = fit_logistic(probe.scaler_(x), y, 3, c=0.001)
    torch.testing.assert_close((probe.w_, probe.b_), (w, b))  # refit on all labels at the chosen C
    assert "only value" in probe.chosen_by_ and probe.edge_ is None
    assert LinearProbe(c_grid=(0.001,)).fit(x, y, *_blobs(30, seed=8)).c_ == 0.001


def test_without_anything_to_validate_on_the_rule_is_the_grid_value_nearest_c_1():
    x, y = _blobs(3, seed=6)  # one label per class: no fold can hold a class out
    probe = LinearProbe(c_grid=(1e-3, 1e-2, 10.0)).fit(x, y)
    assert probe.c_ == 10.0 and "nearest C=1" in probe.chosen_by_
    assert probe.edge_ is None  # nothing was chosen on held-out data


def test_the_default_grid_is_wide_and_a_choice_at_its_edge_is_reported():
    assert min(LinearProbe().c_grid) <= 1e-5 and max(LinearProbe().c_grid) >= 1e3
    x, y = _blobs(200, seed=3, noise=1.0)
    xv, yv = _blobs(200, seed=4, noise=1.0)
    high = LinearProbe(c_grid=(1e-5, 1e-3, 1.0)).fit(x, y, xv, yv)
    assert high.c_ == 1.0 and high.edge_ == "highest" and high.chosen_by_ == "validation split"
    cv = LinearProbe(c_grid=(1e-5, 1e-3, 1.0)).fit(x, y)
    assert cv.edge_ == "highest" and cv.chosen_by_ == "5-fold CV in the training labels"
    x, y = _blobs(200, seed=3, noise=0.3)
    xv, yv = _blobs(200, seed=4, noise=0.3)
    inside = LinearProbe(c_grid=(1e-5, 1e-3, 1.0)).fit(x, y, xv, yv)  # 1e-3 and 1.0 both perfect
    assert inside.c_ == 1e-3 and inside.edge_ is None


def test_global_scaling_keeps_the_variances_that_per_feature_scaling_whitens_away():
    """PCA-like coordinates: 3 informative high-variance ones, 200 near-silent noise ones. Scaled
    per feature the noise weighs as much as the signal and 5 labels per class overfit it; one
    scale for all keeps it near zero."""
    g = torch.Generator().manual_seed(0)

    def draw(n):
        x, y = _blobs(n, d=3, k=3, seed=int(torch.randint(0, 10_000, (1,), generator=g)), noise=1.5)
        return torch.cat([x, 0.01 * torch.randn(n, 200, generator=g)], 1), y

    scaler = Standardizer.fit(draw(500)[0], per_feature=False)
    assert torch.unique(scaler.std).numel() == 1  # one scale: relative variances unchanged
    (x, y), (xt, yt) = draw(15), draw(600)
    scores = {how: LinearProbe(c_grid=(1.0,), standardize=how).fit(x, y).score(xt, yt)
              for how in ("feature", "global")}
    assert scores["global"] > scores["feature"] + 0.1, scores
    with pytest.raises(ConfigError, match=r"linear\.standardize"):
        LinearProbe(standardize="pca").fit(x, y)  # type: ignore[arg-type]
