"""Fine-tuning: the encoder and a new head trained end to end on labelled images.

A :class:`Classifier` is a :class:`~aevision.tasks.features.FeatureEncoder` (the same features
the linear probe and kNN read) plus a head, linear or with hidden layers; its ``forward(x, y)``
returns ``{"loss", "error"}``, so the ordinary :class:`~aevision.engine.Trainer` trains it: Fabric
devices and precision, checkpoints, the best epoch chosen on validation loss, everything
pretraining gets. Specific to fine-tuning:

- ``encoder_lr_scale``: the pretrained encoder moves slower than the fresh head (its
  ``param_groups`` hook gives the encoder ``lr * encoder_lr_scale``), so a randomly initialised
  head does not wreck the features in the first steps; ``head_lr_scale`` slows the head instead
  (pretrained and scratch alike), for a high sgd rate that batch norm makes safe for the encoder
  but not for a linear head;
- ``head_init="probe"``: the head starts as the linear probe's solution on the frozen features
  (full-batch logistic regression), so fine-tuning starts from the probe's accuracy instead of a
  random head whose first gradients would scramble the pretrained features (LP-FT, Kumar et al.
  2022);
- the head reads standardised features (a fixed shift and scale measured on the training images
  before fine-tuning starts, with a floor on the std: see :meth:`Classifier.standardize`), as the
  probe does, so Adam's fixed-size steps on the head mean the same thing for every feature;
- ``hidden``: hidden layers in the head (ReLU, then dropout). A linear head on the probe's
  features keeps fine-tuning close to the probe, which is what few labels need; with many labels a
  hidden layer lets the head combine features the encoder computes, instead of asking the encoder
  to make every class linearly separable on its own. Such a head starts at random (with
  ``freeze_epochs`` to train it before the encoder moves);
- ``layer_decay``: layer-wise learning-rate decay for a ViT encoder (``mae``; BEiT, Bao et al.
  2022, and the MAE paper's fine-tuning): its layer i of L (0 = patch embedding, 1..depth = the
  blocks, L = depth + 1 = the final norm) learns at ``lr * encoder_lr_scale * decay^(L - i)``,
  so the first layers, the most general, move least. Encoders without numbered blocks refuse it;
- ``freeze_epochs``: the first epochs train the head alone, then the whole network (the encoder
  is held still as :mod:`aevision.tasks.freezing` holds every task's pretrained parts). They run
  as a separate Trainer phase (``out_dir/head`` then ``out_dir/full``).

The supervised baseline is the same code with ``init="scratch"``: the same architecture, randomly
initialised, every layer at the full learning rate.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from aevision.config import VAL_BATCH_SIZE, TrainConfig, to_dict
from aevision.data.augment import Augment, AugmentConfig
from aevision.data.batches import TensorBatches
from aevision.data.imageset import ImageSet, float_batches
from aevision.data.sources import fingerprint
from aevision.engine import Trainer, seed_everything
from aevision.engine.run import Run, run_key
from aevision.errors import AevisionError, ConfigError
from aevision.models.inference import eval_mode
from aevision.tasks.features import FeatureEncoder
from aevision.tasks.flips import flip_averaged, tta_rule, valid_tta
from aevision.tasks.freezing import Freezable
from aevision.tasks.losses import ClassificationLoss, LossConfig
from aevision.validation import check


@dataclass
class FinetuneConfig:
    """``train`` is the engine's own config (epochs, batch size, lr of the head, optimizer,
    scheduler, devices, precision); the rest is what fine-tuning adds."""

    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        epochs=10, batch_size=128, lr=1e-3, optimizer="adamw", scheduler="cosine", progress=False))
    init: Literal["pretrained", "scratch"] = "pretrained"
    encoder_lr_scale: float = 0.1  # encoder lr = train.lr * this (1 for scratch)
    # head lr = train.lr * this, pretrained and scratch: a head that must move slower than a
    # batch-normed encoder at a high sgd rate (which its normalisation makes scale-free)
    head_lr_scale: float = 1.0
    layer_decay: float | None = None  # ViT encoders: layer i of L at lr * scale * this^(L - i)
    freeze_epochs: int = 0  # epochs (out of train.epochs) that train the head only
    head_init: Literal["probe", "random"] = "probe"  # probe: start from the linear probe (pretrained only)
    head_c: float = 1.0  # the probe's inverse L2 strength for head_init="probe"
    dropout: float = 0.0  # on the features, before the head
    hidden: list[int] = field(default_factory=list)  # hidden widths of the head ([] = linear)
    hidden_dropout: float = 0.5  # after each hidden layer
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    # test-time flips ("hflip", "vflip"): predict (validation and test scores) averages the class
    # probabilities of each image and its mirror images; training, its checkpoints and the epoch
    # it keeps are unchanged, so a finished fine-tune is reused whatever this says (tasks/flips.py)
    tta: list[str] = field(default_factory=list)

    def validate(self, prefix: str = "finetune") -> None:
        self.train.validate(f"{prefix}.train")
        # error: the validation error rate (the classifier's second loss term, exact over the split)
        check(self.train.monitor in ("loss", "error"), f"{prefix}.train.monitor", self.train.monitor,
              "loss or error")
        self.augment.validate(f"{prefix}.augment")
        self.loss.validate(f"{prefix}.loss")
        check(self.encoder_lr_scale >= 0, f"{prefix}.encoder_lr_scale", self.encoder_lr_scale,
              "a number >= 0")
        check(self.head_lr_scale > 0, f"{prefix}.head_lr_scale", self.head_lr_scale, "a number > 0")
        check(0 <= self.freeze_epochs <= self.train.epochs, f"{prefix}.freeze_epochs",
              self.freeze_epochs, f"an integer in [0, train.epochs={self.train.epochs}]")
        check(0 <= self.dropout < 1, f"{prefix}.dropout", self.dropout, "a fraction in [0, 1)")
        check(self.head_c > 0, f"{prefix}.head_c", self.head_c, "a number > 0")
        if self.layer_decay is not None:
            check(0 < self.layer_decay <= 1, f"{prefix}.layer_decay", self.layer_decay,
                  "a factor in (0, 1] or null")
        for i, h in enumerate(self.hidden):
            check(isinstance(h, int) and h >= 1, f"{prefix}.hidden[{i}]", h, "a positive integer")
        check(0 <= self.hidden_dropout < 1, f"{prefix}.hidden_dropout", self.hidden_dropout,
              "a fraction in [0, 1)")
        check(isinstance(self.tta, list) and valid_tta(self.tta), f"{prefix}.tta", self.tta, tta_rule())
        if self.hidden and self.init == "pretrained":
            check(self.head_init == "random", f"{prefix}.head_init", self.head_init,
                  "'random' with hidden layers (the probe's solution is a linear head)")


STD_FLOOR = 0.1  # see Classifier.standardize


def encoder_layers(features: FeatureEncoder, decay: float) -> tuple[dict[int, list[nn.Parameter]], int]:
    """The features' parameters by layer for layer-wise lr decay, and the top layer L: the encoder
    numbers its own (``layer_of(name)``, ``num_layers``: a ViT's patch embedding 0, blocks 1..depth);
    what else the features hold (code transforms) sits at the top."""
    encoder = features.encoder
    layer_of = getattr(encoder, "layer_of", None)
    if not callable(layer_of):
        raise ConfigError("finetune.layer_decay", decay, "null: layer-wise decay needs an encoder "
                          "of numbered transformer blocks (model.name=mae)")
    top = int(encoder.num_layers)
    layers: dict[int, list[nn.Parameter]] = {}
    for name, param in features.named_parameters():
        i = layer_of(name.removeprefix("encoder.")) if name.startswith("encoder.") else top
        layers.setdefault(i, []).append(param)
    return layers, top


class Classifier(Freezable):
    """features (N, C, H, W) -> (N, D), then the head: dropout, [linear + ReLU + dropout] per
    hidden width, linear -> (N, K) logits. ``freeze_epochs`` holds ``features`` still
    (:class:`~aevision.tasks.freezing.Freezable`)."""

    def __init__(self, features: FeatureEncoder, n_classes: int, loss: ClassificationLoss | None = None,
                 dropout: float = 0.0, encoder_lr_scale: float = 1.0, hidden: Sequence[int] = (),
                 hidden_dropout: float = 0.5, layer_decay: float | None = None, head_lr_scale: float = 1.0):
        super().__init__()
        self.features = features
        self.hidden = tuple(hidden)
        layers: list[nn.Module] = [nn.Dropout(dropout)]
        width = features.dim
        for h in self.hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(hidden_dropout)]
            width = h
        self.head = nn.Sequential(*layers, nn.Linear(width, n_classes))
        # feature standardisation (identity until measured): head((f - shift) * scale)
        self.register_buffer("shift", torch.zeros(features.dim))
        self.register_buffer("scale", torch.ones(features.dim))
        self.criterion = loss or ClassificationLoss()
        self.encoder_lr_scale, self.head_lr_scale = encoder_lr_scale, head_lr_scale
        self.layer_decay = layer_decay
        self.tta: list[str] = []  # test-time flips of predict (FinetuneConfig.tta)
        if layer_decay is not None:
            encoder_layers(features, layer_decay)  # refuses an encoder without numbered layers

    def logits(self, x: Tensor) -> Tensor:
        return self.head((self.features(x) - self.shift) * self.scale)

    @torch.no_grad()
    def standardize(self, images: ImageSet) -> Tensor:
        """Measure the feature shift and scale on ``images``; returns their standardised features.

        The scale is ``1 / sqrt(std^2 + floor^2)``, ``floor = STD_FLOOR x`` the features' RMS
        std: sparse features (winner-take-all, ReLU maps that rarely fire) have tiny spreads, and
        dividing by those would turn the small changes fine-tuning makes to them into large
        swings of the logits.
        """
        from aevision.tasks.features import extract
        from aevision.tasks.probe import Standardizer

        feats = extract(self.features, images)
        scaler = Standardizer.fit(feats)
        floor = STD_FLOOR * scaler.std.pow(2).mean().sqrt()
        self.shift.copy_(scaler.mean)
        self.scale.copy_((scaler.std.pow(2) + floor**2).rsqrt())
        return (feats - self.shift) * self.scale

    @torch.no_grad()
    def init_head_from_probe(self, images: ImageSet, c: float = 1.0, max_iter: int = 100) -> None:
        """Standardise on labelled ``images``, then set the head to the logistic regression
        (inverse L2 strength ``c``) of the standardised features."""
        from aevision.tasks.probe import fit_logistic

        assert images.labels is not None
        if self.hidden:
            raise AevisionError("a head with hidden layers cannot start as the linear probe: "
                                "use head_init='random'")
        feats = self.standardize(images)
        linear = self.head[-1]
        cw = self.criterion.class_weight  # the loss's own class weights, so head and loss agree
        w, b = fit_logistic(feats, images.labels.long(), linear.out_features, c, max_iter,
                            class_weight=None if cw is None else cw.cpu())
        linear.weight.copy_(w.T)
        linear.bias.copy_(b)

    def forward(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        """Training objective: ``loss`` (the configured loss) and ``error`` (batch error rate)."""
        logits = self.logits(x)
        return {"loss": self.criterion(logits, y),
                "error": (logits.argmax(1) != y).float().mean().detach()}

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """The engine's optimizer hook: the head at ``lr * head_lr_scale``, the encoder at
        ``lr * encoder_lr_scale`` (frozen or not: a frozen encoder has no gradient, so the optimizer
        leaves it alone), with ``layer_decay`` one group per encoder layer (:func:`encoder_layers`)."""
        head = {"params": list(self.head.parameters()), "lr": lr * self.head_lr_scale}
        groups: list[dict[str, Any]] = [head]
        if self.layer_decay is not None:
            layers, top = encoder_layers(self.features, self.layer_decay)
            base = lr * self.encoder_lr_scale
            return groups + [{"params": params, "lr": base * self.layer_decay ** (top - i)}
                             for i, params in sorted(layers.items())]
        encoder = list(self.features.parameters())
        if encoder:
            groups.append({"params": encoder, "lr": lr * self.encoder_lr_scale})
        return groups

    def frozen_parts(self) -> list[nn.Module]:
        return [self.features]

    def scores(self, x: Tensor) -> Tensor:
        """(N, C, H, W) in [0, 1] -> (N, K) class probabilities, averaged over each image and its
        ``tta`` flips (none: the softmax of the logits)."""
        return flip_averaged(lambda v: self.logits(v).softmax(dim=1), x, self.tta, spatial=False)

    @torch.no_grad()
    def predict(self, images: ImageSet | Tensor, batch_size: int = 1024) -> Tensor:
        """Predicted labels (N,) of uint8 or [0, 1] images, in eval mode (the most probable class
        of :meth:`scores`)."""
        x_all = images.images if isinstance(images, ImageSet) else images
        device = next(self.parameters()).device
        with eval_mode(self):
            out = [self.scores(x).argmax(1).cpu() for x in float_batches(x_all, batch_size, device)]
        return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


@dataclass
class FinetuneResult:
    classifier: Classifier
    history: list[dict[str, Any]]
    best_epoch: int | None  # in the last phase, chosen on validation loss; None without validation
    train_seconds: float
    images_seen: int  # labelled images processed in training (epochs x images)


def finetune(features: FeatureEncoder, train: ImageSet, val: ImageSet | None, cfg: FinetuneConfig,
             out_dir: str | Path, *, n_classes: int | None = None, seed: int = 0,
             resume: bool = False) -> FinetuneResult:
    """Train ``features`` + a new head on the labelled ``train`` images.

    ``val`` (labelled) chooses the epoch whose weights are kept (lowest validation loss, or error
    rate with ``train.monitor: error``); without it the last epoch's weights are kept, so nothing
    outside ``train`` influences the result. ``resume``: a fine-tune of this very key (config,
    images, starting weights) killed in ``out_dir`` continues from its last checkpoint (a long
    fine-tune outlives a session); anything else in the folder is replaced.
    """
    cfg.validate()
    if train.labels is None:
        raise AevisionError(f"fine-tuning needs labels: dataset {train.name!r} has none")
    k = int(n_classes or train.num_classes)
    seed_everything(seed, cfg.train.deterministic)
    counts = torch.bincount(train.labels, minlength=k)
    scale = 1.0 if cfg.init == "scratch" else cfg.encoder_lr_scale
    clf = Classifier(features, k, ClassificationLoss.from_config(cfg.loss, counts), cfg.dropout, scale,
                     cfg.hidden, cfg.hidden_dropout, cfg.layer_decay, cfg.head_lr_scale)
    clf.tta = list(cfg.tta)
    started = time.perf_counter()
    if cfg.init == "pretrained":
        if cfg.head_init == "probe":
            clf.init_head_from_probe(train, cfg.head_c)
        else:
            clf.standardize(train)
    probe_seconds = time.perf_counter() - started
    augment = Augment(cfg.augment) if cfg.augment.active else None
    bs = min(cfg.train.batch_size, len(train))
    batches = TensorBatches(train.images, bs, seed=seed, shuffle=True, drop_last=True,
                            transform=None if augment is None else augment.images_only, targets=train.labels)
    val_batches = (TensorBatches(val.images, max(bs, VAL_BATCH_SIZE), shuffle=False, targets=val.labels)
                   if val is not None and val.labels is not None and len(val) else None)
    phases = []
    if cfg.freeze_epochs and cfg.init == "pretrained":
        phases.append(("head", cfg.freeze_epochs, True))
    if cfg.train.epochs - (phases[0][1] if phases else 0) > 0:
        phases.append(("full", cfg.train.epochs - (phases[0][1] if phases else 0), False))
    held = (val.images, val.labels) if val is not None else ()
    trained_by = {name: v for name, v in to_dict(cfg).items() if name != "tta"}  # tta: prediction only
    key = run_key({"finetune": trained_by, "classes": k, "seed": seed},
                  data=fingerprint(train.images, train.labels, *held),
                  init=fingerprint(*features.state_dict().values()))
    history, seconds, best = train_phases(clf, phases, batches, val_batches, cfg.train, Path(out_dir), seed,
                                          key, resume=resume)
    seen = sum(epochs for _, epochs, _ in phases) * batches.num_batches() * bs
    clf.set_frozen(False)
    clf.eval()
    return FinetuneResult(clf, history, best, round(probe_seconds + seconds, 3), seen)


def train_phases(clf: Classifier, phases: list[tuple[str, int, bool]], batches: TensorBatches,
                 val_batches: TensorBatches | None, train_cfg: TrainConfig, out_dir: Path, seed: int,
                 key: dict[str, Any], *, resume: bool = False
                 ) -> tuple[list[dict[str, Any]], float, int | None]:
    """Each phase (``name``, epochs, encoder frozen) is a run of the run lifecycle in
    ``out_dir/name`` (its weights: the Trainer's checkpoints there; ``summary.json``: config, fit,
    timing); with ``resume`` a phase of this key continues from its checkpoint. Returns the history
    of every phase, the training seconds (a resumed phase's: of all its epochs) and the last phase's
    best epoch (None without validation)."""
    history: list[dict[str, Any]] = []
    seconds, best = 0.0, None
    for name, epochs, frozen in phases:
        clf.freeze_for(epochs if frozen else 0)
        trainer = Trainer(replace(train_cfg, epochs=epochs), out_dir / name, seed=seed)
        run = Run(out_dir / name, {**key, "phase": name})
        fit = run.fit(trainer, clf, batches, val_batches, {"finetune_phase": name, **key["config"]},
                      reuse=resume, overwrite=True)  # a fine-tune's folder is its caller's
        seconds += run.timing["wall_seconds"]
        run.finish(lambda folder: None, {"summary.json": {"phase": name, "fit": fit.to_dict()}})
        history += [{**row, "phase": name} for row in fit.history]
        best = fit.best_epoch if val_batches is not None else None
    return history, seconds, best
