"""What a benchmark runs: models x datasets x protocols x label budgets, from one YAML file.

A benchmark file (or a shipped preset: ``quick``, ``mnist``, ``fashion-mnist``, see
``aevision/presets/``) looks like::

    name: mnist
    seeds: 3                      # label-subset seeds; results are mean +- std over them
    labels: [10, 100, 1000, all]  # per class; "1000t" = 1000 in total; "all" = every label
    datasets: [{name: mnist}]     # data sections as in a pretrain config
    models:                       # name -> a pretrain config fragment (+ optional features)
      conv-dae:
        model: {name: conv, channels: [32, 64], code_dim: null}
        regularizers: [{name: denoising, noise: masking, p: 0.3}]
        train: {epochs: 10}
        features: {source: stages, pool: 4}
    baselines: [pixels, pca, scratch]
    protocols:
      linear: {c_grid: [0.01, 0.1, 1]}
      knn: {k: 20}
      finetune: {labels: [all], seeds: 1, train: {epochs: 10}, encoder_lr_scale: 0.1}
    imbalance: {ratio: 100, protocols: [linear, finetune]}

Label budgets: ``N`` is N labelled images per class, ``Nt`` is N in total spread evenly over the
classes, ``all`` is every training label. A budget's labels are the only labels anything may use:
with ``N`` or ``Nt`` the linear probe chooses C by cross-validation inside the subset and
fine-tuning keeps its last epoch; with ``all`` the labelled validation split (carved from the
training set, never the test split) chooses C and the fine-tuning epoch.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from aevision.config import (
    DataConfig,
    PretrainConfig,
    apply_override,
    build_config,
    from_dict,
    load_yaml,
    to_dict,
    yaml_load,
)
from aevision.errors import AevisionError, ConfigError
from aevision.tasks.features import FeatureConfig
from aevision.tasks.finetune import FinetuneConfig
from aevision.tasks.knn import Weights
from aevision.tasks.losses import LossConfig
from aevision.validation import check, coerce_kwargs

PRESETS = ("quick", "mnist", "fashion-mnist")
BASELINES = ("pixels", "pca", "scratch")
PROTOCOLS = ("linear", "knn", "finetune")


@dataclass(frozen=True)
class Budget:
    """A label budget: ``per_class`` images of each class, ``total`` images, or neither (all)."""

    per_class: int | None = None
    total: int | None = None

    @property
    def name(self) -> str:
        if self.per_class is not None:
            return f"{self.per_class}/class"
        return f"{self.total} total" if self.total is not None else "all"

    @property
    def is_all(self) -> bool:
        return self.per_class is None and self.total is None

    def sort_key(self, n_classes: int = 10) -> float:
        if self.per_class is not None:
            return float(self.per_class)
        return self.total / n_classes if self.total is not None else float("inf")

    def __str__(self) -> str:
        return self.name


_BUDGET = re.compile(r"^(\d+)\s*(t|total)?$")


def parse_budget(value: Any, field: str = "labels") -> Budget:
    """``10`` / ``"10"`` -> 10 per class; ``"1000t"`` / ``"1000total"`` -> 1000 in total; ``"all"``."""
    if isinstance(value, bool):
        raise ConfigError(field, value, "a number of labels per class, 'Nt' (N in total) or 'all'")
    if isinstance(value, int):
        check(value >= 1, field, value, "a positive number of labels")
        return Budget(per_class=value)
    text = str(value).strip().lower()
    if text == "all":
        return Budget()
    m = _BUDGET.match(text.replace("/class", ""))
    if not m or int(m.group(1)) < 1:
        raise ConfigError(field, value, "a number of labels per class (10), N in total (1000t) or 'all'")
    n = int(m.group(1))
    return Budget(total=n) if m.group(2) else Budget(per_class=n)


def parse_budgets(text: str | list[Any], field: str = "labels") -> list[Budget]:
    """``"10,100,all"`` or a list -> budgets, duplicates dropped, order kept."""
    items = [s for s in text.split(",") if s.strip()] if isinstance(text, str) else list(text)
    if not items:
        raise ConfigError(field, text, "at least one label budget, e.g. 10,100,all")
    out: list[Budget] = []
    for i, item in enumerate(items):
        b = parse_budget(item, f"{field}[{i}]")
        if b not in out:
            out.append(b)
    return out


@dataclass
class LinearProtocol:
    """Linear probe: standardised features, multinomial logistic regression, C chosen without test."""

    enabled: bool = True
    c_grid: list[float] = field(default_factory=lambda: [1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0, 1e3])
    max_iter: int = 200
    folds: int = 5  # cross-validation folds inside small label budgets
    labels: list[int | str] | None = None  # budgets this protocol runs (null: all of them)
    seeds: int | None = None  # null: the benchmark's seeds
    models: list[str] | None = None  # autoencoders it evaluates (null: all); baselines always run


@dataclass
class KNNProtocol:
    """kNN with cosine similarity and a weighted vote (nothing fitted, nothing chosen)."""

    enabled: bool = True
    k: int = 20
    weights: Weights = "exp"
    temperature: float = 0.07
    labels: list[int | str] | None = None
    seeds: int | None = None
    models: list[str] | None = None


@dataclass
class FinetuneProtocol(FinetuneConfig):
    """Fine-tuning options (see :class:`~aevision.tasks.finetune.FinetuneConfig`) plus where it runs."""

    enabled: bool = True
    labels: list[int | str] | None = None
    seeds: int | None = None
    # autoencoders to fine-tune (null: all); the scratch baseline trains their architectures
    models: list[str] | None = None
    # small budgets: repeat the labelled images within an epoch up to this many, so that a
    # budget of 10 per class still gets a useful number of optimisation steps per epoch
    min_epoch_images: int = 0


@dataclass
class Protocols:
    linear: LinearProtocol = field(default_factory=LinearProtocol)
    knn: KNNProtocol = field(default_factory=KNNProtocol)
    finetune: FinetuneProtocol = field(default_factory=FinetuneProtocol)


@dataclass
class ImbalanceConfig:
    """A long-tailed training set (exponential profile): plain vs class-weighted loss."""

    ratio: float | None = None  # largest class / smallest class; null: no imbalance study
    protocols: list[str] = field(default_factory=lambda: ["linear", "finetune"])
    models: list[str] | None = None  # which autoencoders (null: all)
    weighted: LossConfig = field(default_factory=lambda: LossConfig(class_weight="inverse"))
    seeds: int | None = None


@dataclass
class BenchmarkConfig:
    name: str = "benchmark"
    seed: int = 0  # pretraining seed; label subsets use seed, seed + 1, ...
    seeds: int = 3
    output_dir: str = "runs/benchmark"
    labels: list[int | str] = field(default_factory=lambda: [10, 100, 1000, "all"])
    datasets: list[DataConfig] = field(default_factory=lambda: [DataConfig(name="digits")])
    models: dict[str, Any] = field(default_factory=dict)
    features: FeatureConfig = field(default_factory=FeatureConfig)  # default for every model
    baselines: list[str] = field(default_factory=lambda: list(BASELINES))
    protocols: Protocols = field(default_factory=Protocols)
    imbalance: ImbalanceConfig = field(default_factory=ImbalanceConfig)
    reuse_pretrained: bool = True  # load a model whose folder holds the identical config
    reuse_runs: bool = False  # read back protocol runs finished from identical inputs (--resume)
    confusion_png: bool = True  # a confusion-matrix PNG per method/protocol at the largest budget
    progress: bool = False  # per-epoch lines from pretraining / fine-tuning

    @property
    def budgets(self) -> list[Budget]:
        return parse_budgets(self.labels)

    def validate(self) -> None:
        check(self.seed >= 0, "seed", self.seed, "an integer >= 0")
        check(self.seeds >= 1, "seeds", self.seeds, "an integer >= 1")
        check(bool(self.datasets), "datasets", self.datasets, "at least one dataset")
        check(bool(self.budgets), "labels", self.labels, "at least one label budget")
        for i, d in enumerate(self.datasets):
            d.validate(f"datasets[{i}]")
        for i, b in enumerate(self.baselines):
            check(b in BASELINES, f"baselines[{i}]", b, "one of " + ", ".join(BASELINES))
        check(bool(self.models) or "pixels" in self.baselines or "pca" in self.baselines,
              "models", self.models, "at least one model (or a pixels/pca baseline)")
        self.features.validate("features")
        for name, entry in self.models.items():
            check(isinstance(entry, dict), f"models.{name}", entry,
                  "a mapping with model / regularizers / train sections")
            self.model_features(name)
            self._check_builders(name, self.pretrain_config(name, self.datasets[0]))
        for pname in PROTOCOLS:
            proto = getattr(self.protocols, pname)
            if proto.labels is not None:
                parse_budgets(proto.labels, f"protocols.{pname}.labels")
            if proto.seeds is not None:
                check(proto.seeds >= 1, f"protocols.{pname}.seeds", proto.seeds, "an integer >= 1")
            for i, m in enumerate(proto.models or []):
                check(m in self.models, f"protocols.{pname}.models[{i}]", m,
                      "one of the benchmark's models: " + ", ".join(self.models))
        lin = self.protocols.linear
        check(bool(lin.c_grid) and all(c > 0 for c in lin.c_grid), "protocols.linear.c_grid",
              lin.c_grid, "a non-empty list of numbers > 0")
        check(lin.max_iter >= 1, "protocols.linear.max_iter", lin.max_iter, "an integer >= 1")
        check(lin.folds >= 2, "protocols.linear.folds", lin.folds, "an integer >= 2")
        knn = self.protocols.knn
        check(knn.k >= 1, "protocols.knn.k", knn.k, "an integer >= 1")
        check(knn.temperature > 0, "protocols.knn.temperature", knn.temperature, "a number > 0")
        self.protocols.finetune.validate("protocols.finetune")
        check(self.protocols.finetune.min_epoch_images >= 0, "protocols.finetune.min_epoch_images",
              self.protocols.finetune.min_epoch_images, "an integer >= 0")
        imb = self.imbalance
        if imb.ratio is not None:
            check(imb.ratio >= 1, "imbalance.ratio", imb.ratio, "a number >= 1 (largest / smallest class)")
        for i, p in enumerate(imb.protocols):
            check(p in ("linear", "finetune"), f"imbalance.protocols[{i}]", p, "'linear' or 'finetune'")
        for i, m in enumerate(imb.models or [] if imb.ratio is not None else []):
            check(m in self.models, f"imbalance.models[{i}]", m,
                  "one of the benchmark's models: " + ", ".join(self.models))
        imb.weighted.validate("imbalance.weighted")
        check(imb.weighted.weighted, "imbalance.weighted.class_weight", imb.weighted.class_weight,
              "a class weighting ('inverse', 'effective' or a list): it is compared with plain CE")
        if imb.seeds is not None:
            check(imb.seeds >= 1, "imbalance.seeds", imb.seeds, "an integer >= 1")

    def budgets_for(self, protocol: str) -> list[Budget]:
        own = getattr(self.protocols, protocol).labels
        return self.budgets if own is None else [
            b for b in parse_budgets(own, f"protocols.{protocol}.labels") if b in self.budgets]

    def runs(self, protocol: str, model: str) -> bool:
        """Whether ``protocol`` is on and evaluates autoencoder ``model``."""
        proto = getattr(self.protocols, protocol)
        return proto.enabled and (proto.models is None or model in proto.models)

    def seeds_for(self, protocol: str) -> int:
        own = getattr(self.protocols, protocol).seeds
        return self.seeds if own is None else own

    def model_features(self, name: str) -> FeatureConfig:
        entry = self.models[name]
        if "features" not in entry:
            return self.features
        feats = from_dict(FeatureConfig, entry["features"], f"models.{name}.features")
        feats.validate(f"models.{name}.features")
        return feats

    def pretrain_config(self, name: str, data: DataConfig) -> PretrainConfig:
        """The full pretrain config of model ``name`` on dataset ``data``."""
        fragment = {k: copy.deepcopy(v) for k, v in self.models[name].items() if k != "features"}
        for key in fragment:
            check(key in ("model", "regularizers", "train"), f"models.{name}.{key}", fragment[key],
                  "only model, regularizers, train and features sections")
        fragment.setdefault("train", {}).setdefault("progress", self.progress)
        base = {"seed": self.seed, "data": to_dict(data),
                "output_dir": str(Path(self.output_dir) / "models" / safe_name(data.name) / name),
                **fragment}
        try:
            return build_config(base=base)
        except ConfigError as e:
            raise ConfigError(f"models.{name}.{e.field}", e.value, e.expected) from None

    @staticmethod
    def _check_builders(name: str, pcfg: PretrainConfig) -> None:
        """Model and regularizer options, checked now rather than after an hour of other work."""
        from aevision.models import MODELS
        from aevision.regularizers import build_regularizer

        entry = MODELS.get(pcfg.model.name, f"models.{name}.model.name")
        coerce_kwargs(f"models.{name}.model", entry.fn, pcfg.model.options)
        for i, reg in enumerate(pcfg.regularizers):
            build_regularizer(to_dict(reg), f"models.{name}.regularizers[{i}]")

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


def _merged(base: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``new``, mappings merged key by key, everything else replaced."""
    out = copy.deepcopy(base)
    for k, v in new.items():
        out[k] = _merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) \
            and k != "models" else copy.deepcopy(v)
    return out


def safe_name(name: str) -> str:
    """A dataset or model name as a folder name (``folder:/a/b`` -> ``folder_a_b``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "data"


def preset_text(name: str) -> str:
    return (resources.files("aevision") / "presets" / f"{name}.yaml").read_text(encoding="utf-8")


def load_benchmark(source: str | Path | dict[str, Any], overrides: list[str] | None = None
                   ) -> BenchmarkConfig:
    """A preset name, a YAML path or a mapping, then ``KEY=VALUE`` overrides, validated."""
    if isinstance(source, dict):
        data = copy.deepcopy(source)
    elif str(source) in PRESETS and not Path(source).exists():
        data = yaml_load(preset_text(str(source)))
    else:
        path = Path(source)
        if not path.exists() and path.suffix not in (".yaml", ".yml"):
            raise AevisionError(f"benchmark {source!r}: not a file and not a preset "
                                f"(presets: {', '.join(PRESETS)})")
        data = load_yaml(path)
    for assignment in overrides or []:
        apply_override(data, assignment)
    if not isinstance(data, dict):
        raise AevisionError(f"benchmark {source!r}: expected a mapping at the top level")
    # nested sections start from the defaults, so `finetune: {train: {epochs: 5}}` keeps the
    # other fine-tuning defaults (AdamW, cosine schedule) instead of the pretraining ones
    merged = _merged(BenchmarkConfig().to_dict(), data)
    cfg: BenchmarkConfig = from_dict(BenchmarkConfig, merged, "")
    cfg.validate()
    return cfg


ProtocolName = Literal["linear", "knn", "finetune"]
