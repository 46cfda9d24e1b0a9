"""Anomaly scores, AUROC, latent mixes for augmentation, and the anomaly command."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from aevision.cli import main
from aevision.errors import AevisionError
from aevision.models import build_model
from aevision.tasks.anomaly import CodeDensity, auroc, reconstruction_error
from aevision.tasks.augment import latent_mixes


def test_auroc_matches_sklearn_on_a_toy_case():
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(40, dtype=int), np.ones(15, dtype=int)]
    scores = np.r_[rng.normal(0, 1, 40), rng.normal(1.2, 1, 15)]
    assert auroc(scores, y) == pytest.approx(roc_auc_score(y, scores), abs=1e-6)
    # ties count one half, as in sklearn
    tied = np.array([0.1, 0.5, 0.5, 0.5, 0.9, 0.2])
    labels = np.array([0, 0, 1, 1, 1, 0])
    assert auroc(tied, labels) == pytest.approx(roc_auc_score(labels, tied), abs=1e-6)
    assert auroc([1, 2, 3, 4], [0, 0, 1, 1]) == 1.0
    assert auroc([4, 3, 2, 1], [0, 0, 1, 1]) == 0.0
    with pytest.raises(AevisionError, match="both normal and anomalous"):
        auroc([1, 2], [0, 0])


def test_gaussian_density_is_the_mahalanobis_distance():
    g = torch.Generator().manual_seed(0)
    normal = torch.randn(3000, 3, generator=g) @ torch.tensor([[2.0, 0, 0], [0.5, 1, 0], [0, 0, 0.3]])
    d = CodeDensity("gaussian").fit(normal)
    mean = normal.double().mean(0)
    cov = torch.cov(normal.double().T)
    probe = torch.tensor([[0.0, 0.0, 0.0], [3.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    diff = probe.double() - mean
    expected = ((diff @ torch.linalg.inv(cov)) * diff).sum(1)
    # Ledoit-Wolf shrinks the covariance a little with 3000 samples: a few percent at most
    torch.testing.assert_close(d.score(probe).double(), expected, rtol=0.05, atol=0.05)
    # a point 1 away along a low-variance direction is more anomalous than one 3 away along a
    # high-variance one
    assert d.score(probe)[2] > 3 * d.score(probe)[1]


@pytest.mark.parametrize("kind", ["gaussian", "gmm", "knn"])
def test_densities_rank_outliers_above_inliers(kind):
    g = torch.Generator().manual_seed(1)
    normal = torch.cat([torch.randn(300, 4, generator=g) - 3, torch.randn(300, 4, generator=g) + 3])
    inliers = torch.cat([torch.randn(50, 4, generator=g) - 3, torch.randn(50, 4, generator=g) + 3])
    outliers = torch.randn(50, 4, generator=g) * 0.3 + torch.tensor([6.0, -6, 6, -6])
    d = CodeDensity(kind, k=3, components=2).fit(normal)
    scores = d.score(torch.cat([inliers, outliers]))
    y = torch.cat([torch.zeros(100), torch.ones(50)])
    assert auroc(scores, y) > 0.99


def test_knn_density_by_hand_and_self_exclusion():
    ref = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    d = CodeDensity("knn", k=2).fit(ref)
    assert d.score(torch.tensor([[2.0]])).item() == pytest.approx(1.0)  # neighbours at 1 and 1
    # scoring the reference itself: without exclusion the point is its own neighbour
    assert d.score(ref[:1]).item() == pytest.approx(0.5)
    assert d.score(ref[:1], exclude_self=True).item() == pytest.approx(2.0)


def test_reconstruction_error_per_image():
    model = build_model("dense", (1, 4, 4), {"code_dim": 3}).eval()
    x = torch.rand(5, 1, 4, 4)
    err = reconstruction_error(model, x, batch_size=2)
    expected = (model.reconstruct(x) - x).pow(2).flatten(1).mean(1)
    torch.testing.assert_close(err, expected.detach())
    bce = build_model("dense", (1, 4, 4), {"code_dim": 3}, reconstruction="bce").eval()
    assert reconstruction_error(bce, x).shape == (5,)


def test_latent_mixes_stay_within_classes():
    model = build_model("conv-vae", (1, 10, 10), {"channels": [4], "code_dim": 3}).eval()
    images = torch.randint(0, 256, (12, 1, 10, 10), dtype=torch.uint8)
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 3, 4])  # class 3 and 4: one image each
    mixed = latent_mixes(model, images, labels, per_class=5, seed=0)
    assert mixed.images.shape == (15, 1, 10, 10)  # classes 0, 1, 2 only
    assert mixed.labels.tolist() == [0] * 5 + [1] * 5 + [2] * 5
    assert torch.all(labels[mixed.pairs[:, 0]] == mixed.labels)
    assert torch.all(labels[mixed.pairs[:, 1]] == mixed.labels)
    assert torch.all(mixed.pairs[:, 0] != mixed.pairs[:, 1])
    assert torch.all((mixed.lam >= 0.2) & (mixed.lam <= 0.8))
    # each synthetic image is the decoded mix of its pair's codes
    i = 7
    z = model.encode(images[mixed.pairs[i]].float() / 255)
    lam = mixed.lam[i]
    torch.testing.assert_close(mixed.images[i], model.decode(lam * z[:1] + (1 - lam) * z[1:])[0],
                               rtol=1e-4, atol=1e-5)
    again = latent_mixes(model, images, labels, per_class=5, seed=0)
    assert torch.equal(again.pairs, mixed.pairs)  # seeded


def test_anomaly_cli_scores_a_folder(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["pretrain", "--dataset", "digits", "--limit", "500", "--epochs", "10", "--batch-size",
                 "32", "--lr", "3e-3", "--no-progress", "--model", "dense", "model.code_dim=8",
                 "-o", str(run)]) == 0
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):  # bright noisy squares: unlike any digit (dark background, bright strokes)
        img = rng.integers(200, 256, (8, 8), dtype=np.uint8)
        Image.fromarray(img).save(folder / f"noise{i}.png")
    from aevision.config import DataConfig
    from aevision.data import load_dataset

    digits = load_dataset(DataConfig(name="digits"), 0).test
    for i in range(8):
        Image.fromarray(digits.images[i, 0].numpy()).save(folder / f"digit{i}.png")
    capsys.readouterr()
    for score in ("recon", "knn", "gaussian"):
        out = tmp_path / f"{score}.csv"
        assert main(["anomaly", str(run), str(folder), "--score", score, "-o", str(out),
                     "--grid", str(tmp_path / "top.png"), "--top", "4"]) == 0
        rows = list(csv.DictReader(out.open()))
        assert len(rows) == 12 and {"image", "score", "anomalous"} <= set(rows[0])
        ranked = sorted(rows, key=lambda r: -float(r["score"]))
        assert all("noise" in r["image"] for r in ranked[:4]), score
    assert "reference: digits" in capsys.readouterr().out
    assert main(["anomaly", str(run), str(folder), "--quantile", "1.5"]) == 2
    assert "--quantile" in capsys.readouterr().err


def test_score_images_needs_no_reference_for_reconstruction_error(tmp_path):
    from aevision.data.imageset import ImageSet
    from aevision.models import save_model
    from aevision.tasks.anomaly_report import score_images

    model = build_model("dense", (1, 8, 8), {"code_dim": 4}).eval()
    save_model(model, tmp_path / "m")  # no run config: nothing says what it was trained on
    images = torch.randint(0, 256, (6, 1, 8, 8), dtype=torch.uint8)
    data = ImageSet(images, labels=torch.tensor([0, 1, 0, 1, 0, 1]))
    plain = score_images(model, tmp_path / "m", data)
    assert plain.threshold is None and plain.flagged is None and plain.reference_size is None
    assert plain.names == [str(i) for i in range(6)] and plain.scores[plain.order[0]] == plain.scores.max()
    assert set(plain.rows()[0]) == {"image", "score", "label"}
    with pytest.raises(AevisionError, match="--score knn: needs --reference"):
        score_images(model, tmp_path / "m", data, score="knn")
    folder = tmp_path / "normal"
    folder.mkdir()
    for i in range(5):
        Image.fromarray(images[i, 0].numpy()).save(folder / f"{i}.png")
    ref = score_images(model, tmp_path / "m", data, score="knn", k=2, reference=str(folder))
    assert ref.reference_size == 5 and ref.threshold is not None and "anomalous" in ref.rows()[0]
