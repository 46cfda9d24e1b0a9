"""Classification losses against hand computations and torch's reference implementation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from aevision.errors import ConfigError
from aevision.tasks.losses import ClassificationLoss, LossConfig, class_weights


def _logits():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-1.0, 3.0, 0.0], [0.0, 0.0, 4.0]])
    target = torch.tensor([0, 2, 1, 0])
    return logits, target


def test_weighted_cross_entropy_matches_a_hand_computation():
    logits, target = _logits()
    w = torch.tensor([2.0, 1.0, 0.5])
    # by hand: -log softmax at the target, weighted by the target's class, normalised by the weights
    nll = []
    for row, t in zip(logits.tolist(), target.tolist(), strict=True):
        nll.append(-(row[t] - math.log(sum(math.exp(v) for v in row))))
    a = [w[t].item() for t in target.tolist()]
    expected = sum(ai * li for ai, li in zip(a, nll, strict=True)) / sum(a)
    got = ClassificationLoss(class_weight=w)(logits, target)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    assert got.item() == pytest.approx(F.cross_entropy(logits, target, weight=w).item(), rel=1e-6)
    # unweighted: the plain mean
    assert ClassificationLoss()(logits, target).item() == pytest.approx(sum(nll) / 4, rel=1e-6)


def test_label_smoothing_matches_torch_and_focal_matches_its_formula():
    logits, target = _logits()
    smooth = ClassificationLoss(label_smoothing=0.1)(logits, target)
    assert smooth.item() == pytest.approx(F.cross_entropy(logits, target, label_smoothing=0.1).item(),
                                          rel=1e-6)
    p_t = logits.softmax(1).gather(1, target[:, None]).squeeze(1)
    focal = ((1 - p_t) ** 2 * -p_t.log()).mean()
    assert ClassificationLoss(focal_gamma=2.0)(logits, target).item() == pytest.approx(focal.item(), rel=1e-6)
    assert ClassificationLoss(focal_gamma=0.0)(logits, target).item() == pytest.approx(
        F.cross_entropy(logits, target).item(), rel=1e-6)


def test_focal_loss_down_weights_easy_examples():
    easy = torch.tensor([[5.0, 0.0]])
    hard = torch.tensor([[0.0, 0.5]])
    y = torch.tensor([0])
    ce, fl = ClassificationLoss(), ClassificationLoss(focal_gamma=2.0)
    assert fl(easy, y) / ce(easy, y) < fl(hard, y) / ce(hard, y) < 1.0


def test_sample_weights_weigh_samples():
    logits, target = _logits()
    loss = ClassificationLoss()
    per = loss.per_sample(logits, target)
    s = torch.tensor([1.0, 0.0, 3.0, 0.0])
    assert loss(logits, target, s).item() == pytest.approx(((per[0] + 3 * per[2]) / 4).item(), rel=1e-6)
    # zero weight on a sample: it gets no gradient
    logits.requires_grad_(True)
    loss(logits, target, s).backward()
    assert logits.grad[1].abs().sum() == 0 and logits.grad[0].abs().sum() > 0


def test_class_weight_schemes():
    counts = torch.tensor([100, 10, 1])
    inv = class_weights(counts, "inverse")
    # sklearn's "balanced": N / (K n_c)
    assert torch.allclose(inv, torch.tensor([111 / 300, 111 / 30, 111 / 3]))
    assert (inv * counts).sum().item() == pytest.approx(111)
    beta = 0.99
    eff = class_weights(counts, "effective", beta=beta)
    raw = torch.tensor([(1 - beta) / (1 - beta ** n) for n in (100, 10, 1)])
    assert torch.allclose(eff, raw * 111 / (raw * counts).sum(), rtol=1e-5)
    assert eff[2] > eff[1] > eff[0] and eff[2] / eff[0] < inv[2] / inv[0]  # milder than inverse
    assert class_weights(counts, "none") is None
    assert torch.equal(class_weights(counts, [1.0, 2.0, 3.0]), torch.tensor([1.0, 2.0, 3.0]))
    assert class_weights(torch.tensor([5, 0]), "inverse")[1] == 0  # an absent class
    with pytest.raises(ConfigError, match="a list of 3 weights"):
        class_weights(counts, [1.0, 2.0])


def test_loss_config_validation_names_the_field():
    with pytest.raises(ConfigError, match=r"finetune\.loss\.focal_gamma"):
        LossConfig(focal_gamma=-1).validate("finetune.loss")
    with pytest.raises(ConfigError, match=r"loss\.class_weight: got 'balanced'"):
        LossConfig(class_weight="balanced").validate()
    cfg = LossConfig(class_weight="inverse", label_smoothing=0.1)
    loss = ClassificationLoss.from_config(cfg, [3, 1])
    assert torch.allclose(loss.class_weight, torch.tensor([4 / 6, 4 / 2]))
