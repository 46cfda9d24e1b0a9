"""Metrics agree with scikit-learn; confusion matrices are written as JSON and PNG."""

from __future__ import annotations

import json

import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, f1_score, precision_score

from aevision.tasks.metrics import classification_metrics, save_confusion


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_metrics_match_sklearn_and_ignore_absent_classes(tmp_path):
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 4, (200,), generator=g)  # class 4 of 5 never occurs
    pred = torch.where(torch.rand(200, generator=g) < 0.7, target, torch.randint(0, 5, (200,), generator=g))
    m = classification_metrics(pred, target, 5, ["a", "b", "c", "d", "e"])
    t, p = target.numpy(), pred.numpy()
    assert m["accuracy"] == pytest.approx((t == p).mean())
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(t, p))
    assert m["macro_f1"] == pytest.approx(f1_score(t, p, average="macro", labels=[0, 1, 2, 3]))
    assert m["per_class"]["precision"][:4] == pytest.approx(
        precision_score(t, p, average=None, labels=[0, 1, 2, 3], zero_division=0), abs=1e-6)
    assert m["confusion_matrix"] == confusion_matrix(t, p, labels=range(5)).tolist()
    save_confusion(tmp_path / "cm", m, "toy")
    saved = json.loads((tmp_path / "cm.json").read_text())
    assert saved["matrix"] == m["confusion_matrix"] and saved["classes"][0] == "a"
    assert (tmp_path / "cm.png").read_bytes()[:4] == b"\x89PNG"
