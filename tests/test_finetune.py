"""Fine-tuning on the engine: it learns, freezes and slows the encoder as asked; augmentation."""

from __future__ import annotations

import json

import pytest
import torch

from aevision.config import DataConfig, TrainConfig
from aevision.data import load_dataset
from aevision.data.augment import Augment, AugmentConfig
from aevision.data.batches import TensorBatches
from aevision.data.imageset import to_float
from aevision.errors import AevisionError, ConfigError
from aevision.models import build_model
from aevision.tasks.features import FeatureConfig, FeatureEncoder, extract
from aevision.tasks.finetune import Classifier, FinetuneConfig, finetune


@pytest.fixture(scope="module")
def digits():
    return load_dataset(DataConfig(name="digits"), 0)


pytestmark = pytest.mark.usefixtures("one_thread")  # small models: a second thread only waits


def _encoder(**features):
    model = build_model("conv", (1, 8, 8), {"channels": [8, 16], "code_dim": 32})
    return FeatureEncoder(model, FeatureConfig(**features))


def test_finetuning_learns_and_keeps_the_best_validation_epoch(digits, tmp_path):
    cfg = FinetuneConfig(train=TrainConfig(epochs=8, batch_size=32, lr=3e-3, optimizer="adamw",
                                           scheduler="cosine", progress=False),
                         init="scratch", augment=AugmentConfig(shift=0.1))
    result = finetune(_encoder(), digits.train, digits.val, cfg, tmp_path,
                      n_classes=10, seed=0)
    acc = float((result.classifier.predict(digits.test) == digits.test.labels).float().mean())
    assert acc > 0.8  # chance is 0.1
    assert result.best_epoch is not None and 1 <= result.best_epoch <= 8
    assert len(result.history) == 8 and "val_error" in result.history[-1]
    assert (tmp_path / "full" / "checkpoints" / "last.ckpt").is_file()


def test_train_monitor_error_keeps_the_epoch_with_the_lowest_validation_error(digits, tmp_path):
    cfg = FinetuneConfig(train=TrainConfig(epochs=4, batch_size=64, lr=3e-3, optimizer="adamw",
                                           progress=False, monitor="error"), init="scratch")
    result = finetune(_encoder(), digits.train.subset(range(300)), digits.val, cfg, tmp_path,
                      n_classes=10, seed=0)
    errors = [h["val_error"] for h in result.history]
    assert result.best_epoch == errors.index(min(errors)) + 1
    kept = float((result.classifier.predict(digits.val) != digits.val.labels).float().mean())
    assert kept == pytest.approx(min(errors), abs=1e-6)  # the weights kept are that epoch's
    with pytest.raises(ConfigError, match=r"finetune\.train\.monitor: got 'accuracy', expected loss or err"):
        FinetuneConfig(train=TrainConfig(monitor="accuracy")).validate()


def test_frozen_epochs_leave_the_encoder_alone_and_lr_is_scaled(digits, tmp_path):
    enc = _encoder()
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    cfg = FinetuneConfig(train=TrainConfig(epochs=2, batch_size=64, lr=1e-3, progress=False),
                         freeze_epochs=2, encoder_lr_scale=0.1)
    result = finetune(enc, digits.train.subset(range(200)), None, cfg, tmp_path, n_classes=10)
    after = result.classifier.features.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # only the head trained
    assert result.best_epoch is None  # no validation labels: the last epoch is kept
    assert {h["phase"] for h in result.history} == {"head"}
    groups = Classifier(_encoder(), 10, encoder_lr_scale=0.1).param_groups(1e-3)
    assert [g["lr"] for g in groups] == [1e-3, pytest.approx(1e-4)]


def test_head_lr_scale_slows_the_head_from_scratch_and_pretrained(digits, tmp_path):
    groups = Classifier(_encoder(), 10, encoder_lr_scale=0.5, head_lr_scale=0.01).param_groups(2.0)
    assert [g["lr"] for g in groups] == [pytest.approx(0.02), 1.0]
    for init in ("scratch", "pretrained"):  # the encoder's rule differs; the head's does not
        cfg = FinetuneConfig(train=TrainConfig(epochs=1, batch_size=64, lr=1e-2, progress=False), init=init,
                             head_init="random", head_lr_scale=0.1, encoder_lr_scale=0.5)
        result = finetune(_encoder(), digits.train.subset(range(200)), None, cfg, tmp_path / init,
                          n_classes=10, seed=0)
        lrs = [g["lr"] for g in result.classifier.param_groups(1e-2)]
        assert lrs == [pytest.approx(1e-3), pytest.approx(1e-2 if init == "scratch" else 5e-3)]
    with pytest.raises(AevisionError, match=r"finetune\.head_lr_scale: got 0\.0, expected a number > 0"):
        FinetuneConfig(head_lr_scale=0.0).validate()


def test_unfreezing_trains_the_encoder_in_a_second_phase(digits, tmp_path):
    enc = _encoder()
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    cfg = FinetuneConfig(train=TrainConfig(epochs=2, batch_size=64, lr=1e-3, progress=False),
                         freeze_epochs=1)
    result = finetune(enc, digits.train.subset(range(200)), None, cfg, tmp_path, n_classes=10)
    assert [h["phase"] for h in result.history] == ["head", "full"]
    after = result.classifier.features.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_a_killed_fine_tune_resumes_to_the_uninterrupted_result_when_asked(digits, tmp_path, monkeypatch):
    from test_bench_segmentation import kill_at

    cfg = FinetuneConfig(train=TrainConfig(epochs=3, batch_size=64, lr=1e-3, progress=False), freeze_epochs=1)

    def run(folder: str, resume: bool = False):
        torch.manual_seed(0)  # the same starting weights
        return finetune(_encoder(), digits.train.subset(range(200)), digits.val, cfg, tmp_path / folder,
                        n_classes=10, seed=0, resume=resume)

    def resumed(folder: str) -> bool:
        return json.loads((tmp_path / folder / "full" / "summary.json").read_text())["resumed"]

    whole = run("whole")
    for folder in ("killed", "restarted"):  # killed in the second epoch of the full phase
        kill_at(monkeypatch, 1, lambda f=folder: run(f), folder=folder)
    again = run("killed", resume=True)
    assert [h["epoch"] for h in again.history] == [h["epoch"] for h in whole.history] == [1, 1, 2]
    assert [h["val_loss"] for h in again.history] == [h["val_loss"] for h in whole.history]
    state = whole.classifier.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in again.classifier.state_dict().items())
    assert again.train_seconds > 0
    fresh = run("restarted")  # not asked to resume: trained again from the start
    assert resumed("killed") and not resumed("restarted")
    assert all(torch.equal(v, state[k]) for k, v in fresh.classifier.state_dict().items())


def test_the_classifier_freezes_by_the_epoch_hook_the_segmenter_uses():
    from aevision.tasks.freezing import Freezable

    clf = Classifier(_encoder(), 10, encoder_lr_scale=0.1)
    assert isinstance(clf, Freezable)
    clf.freeze_epochs = 1
    clf.on_train_epoch_start(0)  # as the Trainer calls it
    assert clf.frozen and not clf.features.training and clf.head.training
    assert not any(p.requires_grad for p in clf.features.parameters())
    clf.train()  # a frozen encoder keeps its batch-norm statistics
    assert not clf.features.training
    assert len(clf.param_groups(1e-3)) == 2  # frozen parameters stay in the optimizer, without gradient
    clf.on_train_epoch_start(1)
    assert not clf.frozen and clf.features.training
    assert all(p.requires_grad for p in clf.features.parameters())


def test_stage_features_pool_and_concatenate():
    enc = _encoder(source="stages", pool=2)
    assert enc.dim == 8 * 4 + 16 * 4
    x = torch.rand(5, 1, 8, 8)
    maps = enc.encoder.forward_features(x)
    manual = torch.cat([torch.nn.functional.adaptive_avg_pool2d(m, 2).flatten(1) for m in maps], 1)
    assert torch.allclose(extract(enc, x), manual, atol=1e-6)
    assert _encoder(source="stages", stages=[-1]).dim == 16 * 2 * 2  # the last map, unpooled
    dense = build_model("dense", (1, 8, 8), {"code_dim": 4})
    with pytest.raises(ConfigError, match=r"features\.source"):
        FeatureEncoder(dense, FeatureConfig(source="stages"))


def test_augmentation_is_batched_seeded_and_label_preserving():
    x = torch.zeros(6, 1, 16, 16)
    x[:, :, 6:10, 6:10] = 1.0
    aug = Augment(AugmentConfig(shift=0.2, rotate=15, scale=0.1, zoom=1.2, jitter=0.1, erase=1.0, noise=0.05,
                                hflip=True))
    torch.manual_seed(3)
    a = aug(x)
    torch.manual_seed(3)
    b = aug(x)
    assert a.shape == x.shape and torch.equal(a, b)
    assert not torch.equal(a[0], a[1])  # every image its own transform
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(Augment(AugmentConfig())(x), x)
    with pytest.raises(ConfigError, match=r"augment\.shift"):
        AugmentConfig(shift=0.9).validate()
    labels = torch.arange(6)
    batches = TensorBatches((x * 255).to(torch.uint8), 4, transform=aug.images_only, targets=labels,
                            shuffle=True)
    xb, yb = next(batches.epoch(0))
    assert xb.shape == (4, 1, 16, 16) and yb.dtype == torch.long and len(set(yb.tolist())) == 4


def test_head_starts_as_logistic_regression_of_floor_standardised_features(digits):
    from aevision.tasks.finetune import STD_FLOOR
    from aevision.tasks.probe import fit_logistic

    enc = _encoder()
    clf = Classifier(enc, 10)
    train = digits.train.subset(range(300))
    clf.init_head_from_probe(train, c=0.5)
    f = extract(enc, train).double()
    mean, std = f.mean(0), f.std(0, unbiased=False)
    std = torch.where(std > 1e-8, std, torch.ones_like(std))
    floor = STD_FLOOR * std.pow(2).mean().sqrt()
    scale = (std.pow(2) + floor**2).rsqrt()
    assert torch.allclose(clf.shift.double(), mean, atol=1e-5)
    assert torch.allclose(clf.scale.double(), scale, rtol=1e-4)
    # features with a spread far below the others' are not blown up by 1 / their std
    assert bool((std < floor).any())
    assert float(clf.scale.max()) <= 1 / float(floor) * 1.001
    w, b = fit_logistic(((f - mean) * scale).float(), train.labels, 10, 0.5, 100)
    test = extract(enc, digits.test)
    expected = ((test.double() - mean) * scale).float() @ w + b
    with torch.no_grad():
        logits = clf.logits(to_float(digits.test.images))
    assert torch.allclose(logits, expected, atol=1e-3)
    assert torch.equal(clf.predict(digits.test), expected.argmax(1))


def test_hidden_layer_head_trains_from_a_random_start_and_refuses_the_probe_start(digits, tmp_path):
    cfg = FinetuneConfig(train=TrainConfig(epochs=6, batch_size=32, lr=3e-3, optimizer="adamw",
                                           scheduler="cosine", progress=False),
                         hidden=[32], hidden_dropout=0.2, head_init="random")
    enc = _encoder(source="stages", pool=2)
    result = finetune(enc, digits.train, digits.val, cfg, tmp_path, n_classes=10, seed=0)
    head = result.classifier.head
    assert [type(m).__name__ for m in head] == ["Dropout", "Linear", "ReLU", "Dropout", "Linear"]
    assert head[1].in_features == enc.dim and head[1].out_features == 32 and head[-1].in_features == 32
    assert float(result.classifier.shift.abs().sum()) > 0  # the features were standardised first
    acc = float((result.classifier.predict(digits.test) == digits.test.labels).float().mean())
    assert acc > 0.8  # chance is 0.1
    with pytest.raises(ConfigError, match=r"finetune\.head_init"):
        FinetuneConfig(hidden=[32]).validate()  # the default probe start needs a linear head
    with pytest.raises(ConfigError, match=r"finetune\.hidden\[1\]"):
        FinetuneConfig(hidden=[32, 0], head_init="random").validate()
    with pytest.raises(AevisionError, match="head_init='random'"):
        Classifier(_encoder(), 10, hidden=[8]).init_head_from_probe(digits.train.subset(range(50)))


def test_test_time_flips_average_the_class_probabilities_of_an_image_and_its_mirror(digits, tmp_path):
    train = TrainConfig(epochs=5, batch_size=32, lr=3e-3, optimizer="adamw", progress=False)
    cfg = FinetuneConfig(train=train, init="scratch")

    def run(resume: bool = False) -> Classifier:
        torch.manual_seed(0)  # the same starting weights
        return finetune(_encoder(), digits.train, digits.val, cfg, tmp_path, n_classes=10, seed=0,
                        resume=resume).classifier

    clf = run()
    x = to_float(digits.test.images[:64])
    with torch.no_grad():
        mirrored = (clf.logits(x).softmax(1) + clf.logits(x.flip(-1)).softmax(1)) / 2
        assert torch.allclose(clf.scores(x), clf.logits(x).softmax(1))  # no flips: the plain softmax
        before = clf.predict(digits.test)
        assert torch.equal(before, clf.logits(to_float(digits.test.images)).argmax(1))
        # the same fine-tune asked for flips: its finished training is reused (tta is prediction only)
        stamp = (tmp_path / "full" / "checkpoints" / "last.ckpt").stat().st_mtime_ns
        cfg.tta = ["hflip"]
        flipped = run(resume=True)
        assert (tmp_path / "full" / "checkpoints" / "last.ckpt").stat().st_mtime_ns == stamp
        assert flipped.tta == ["hflip"] and torch.allclose(flipped.scores(x), mirrored, atol=1e-6)
        after = flipped.predict(digits.test)
        assert torch.equal(after, flipped.scores(to_float(digits.test.images)).argmax(1))
        assert not torch.equal(after, before)  # digits are not mirror-symmetric: some votes change
    for bad in (["hflip", "hflip"], ["rotate"], "hflip"):
        with pytest.raises(ConfigError, match=r"finetune\.tta: got .*test-time flips among hflip, vflip"):
            FinetuneConfig(tta=bad).validate()
