"""What a benchmark runs: models x datasets x protocols x label budgets, from one YAML file.

A benchmark file (or a shipped preset: ``quick``, ``mnist``, ``fashion-mnist``, ``cifar10``, see
``aevision/presets/``) looks like::

    name: mnist
    seeds: 3                      # label-subset seeds; results are mean +- std over them
    labels: [10, 100, 1000, all]  # per class; "1000t" = 1000 in total; "all" = every label
    datasets: [{name: mnist}]     # data sections as in a pretrain config
    models:                       # name -> a pretrain config fragment (model, regularizers,
                                  # train, augment: pretraining's) + optional features and
                                  # finetune (this model's changes to protocols.finetune)
      conv-dae:
        model: {name: conv, channels: [32, 64], code_dim: null}
        regularizers: [{name: denoising, noise: masking, p: 0.3}]
        train: {epochs: 10}
        features: {source: stages, pool: 4}
      vit-mae:
        model: {name: mae, patch_size: 4}
        finetune: {layer_decay: 0.75, train: {warmup_steps: 500}}
    baselines: [pixels, pca, scratch, untrained]   # untrained: each model's encoder, random weights
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
from collections.abc import Collection
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from aevision.config import (
    DataConfig,
    LoggerName,
    PretrainConfig,
    apply_override,
    build_config,
    from_dict,
    load_yaml,
    merged,
    to_dict,
    yaml_load,
)
from aevision.errors import AevisionError, ConfigError
from aevision.tasks.features import FeatureConfig
from aevision.tasks.finetune import FinetuneConfig
from aevision.tasks.knn import Weights
from aevision.tasks.losses import LossConfig
from aevision.validation import check, coerce_kwargs

PRESETS = ("quick", "mnist", "fashion-mnist", "cifar10")
# pixels, PCA of the same dimension, a supervised network of a fine-tuned model's architecture
# trained from scratch, and every autoencoder's own encoder untrained (random weights)
BASELINES = ("pixels", "pca", "scratch", "untrained")
PROTOCOLS = ("linear", "knn", "finetune")
# one fine-tune's options (FinetuneConfig's), as the protocol hands them to finetune()
FINETUNE_RECIPE = tuple(f.name for f in fields(FinetuneConfig))
# a protocol's scope: which runs it makes, not what any one of them computes (not part of a run's key)
SCOPE = ("enabled", "labels", "seeds", "models", "all_seeds")


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

    def validate(self, prefix: str = "protocols.linear", models: Collection[str] | None = None) -> None:
        _check_scope(self, prefix, models)
        check(bool(self.c_grid) and all(c > 0 for c in self.c_grid), f"{prefix}.c_grid", self.c_grid,
              "a non-empty list of numbers > 0")
        check(self.max_iter >= 1, f"{prefix}.max_iter", self.max_iter, "an integer >= 1")
        check(self.folds >= 2, f"{prefix}.folds", self.folds, "an integer >= 2")


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

    def validate(self, prefix: str = "protocols.knn", models: Collection[str] | None = None) -> None:
        _check_scope(self, prefix, models)
        check(self.k >= 1, f"{prefix}.k", self.k, "an integer >= 1")
        check(self.temperature > 0, f"{prefix}.temperature", self.temperature, "a number > 0")


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
    # fine-tunes on every label (the subset is then the same; seeds vary the start): null, as
    # many as `seeds`; 1 where one such run costs hours (3 seeds at 400/class, one at all)
    all_seeds: int | None = None

    def validate(self, prefix: str = "protocols.finetune", models: Collection[str] | None = None) -> None:
        super().validate(prefix)
        _check_scope(self, prefix, models)
        check(self.min_epoch_images >= 0, f"{prefix}.min_epoch_images", self.min_epoch_images,
              "an integer >= 0")
        if self.all_seeds is not None:
            check(self.all_seeds >= 1, f"{prefix}.all_seeds", self.all_seeds, "an integer >= 1 or null")

    def recipe(self) -> FinetuneConfig:
        """The fine-tune itself (the options ``finetune()`` takes), without where the protocol runs."""
        return FinetuneConfig(**{k: getattr(self, k) for k in FINETUNE_RECIPE})


# what a model's own finetune section may change: every protocol option but its scope
MODEL_FINETUNE = tuple(f.name for f in fields(FinetuneProtocol) if f.name not in SCOPE)


def _check_scope(protocol: LinearProtocol | KNNProtocol | FinetuneProtocol, prefix: str,
                models: Collection[str] | None) -> None:
    """The settings every protocol has: which budgets, how many seeds, which models."""
    if protocol.labels is not None:
        parse_budgets(protocol.labels, f"{prefix}.labels")
    if protocol.seeds is not None:
        check(protocol.seeds >= 1, f"{prefix}.seeds", protocol.seeds, "an integer >= 1")
    _check_models(protocol.models, f"{prefix}.models", models)


def _check_models(names: list[str] | None, field: str, models: Collection[str] | None) -> None:
    """``names`` among the benchmark's ``models`` (None: not known here, as when fine-tuning checks
    its own config)."""
    if models is None:
        return
    for i, m in enumerate(names or []):
        check(m in models, f"{field}[{i}]", m, "one of the benchmark's models: " + ", ".join(models))


@dataclass
class Protocols:
    linear: LinearProtocol = field(default_factory=LinearProtocol)
    knn: KNNProtocol = field(default_factory=KNNProtocol)
    finetune: FinetuneProtocol = field(default_factory=FinetuneProtocol)

    def validate(self, prefix: str = "protocols", models: Collection[str] | None = None) -> None:
        for name in PROTOCOLS:
            getattr(self, name).validate(f"{prefix}.{name}", models)


@dataclass
class ImbalanceConfig:
    """A long-tailed training set (exponential profile): plain vs class-weighted loss."""

    ratio: float | None = None  # largest class / smallest class; null: no imbalance study
    protocols: list[str] = field(default_factory=lambda: ["linear", "finetune"])
    models: list[str] | None = None  # which autoencoders (null: all)
    weighted: LossConfig = field(default_factory=lambda: LossConfig(class_weight="inverse"))
    seeds: int | None = None

    def validate(self, prefix: str = "imbalance", models: Collection[str] | None = None) -> None:
        if self.ratio is not None:
            check(self.ratio >= 1, f"{prefix}.ratio", self.ratio, "a number >= 1 (largest / smallest class)")
            _check_models(self.models, f"{prefix}.models", models)
        for i, p in enumerate(self.protocols):
            check(p in ("linear", "finetune"), f"{prefix}.protocols[{i}]", p, "'linear' or 'finetune'")
        self.weighted.validate(f"{prefix}.weighted")
        check(self.weighted.weighted, f"{prefix}.weighted.class_weight", self.weighted.class_weight,
              "a class weighting ('inverse', 'effective' or a list): it is compared with plain CE")
        if self.seeds is not None:
            check(self.seeds >= 1, f"{prefix}.seeds", self.seeds, "an integer >= 1")


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
    # where reuse_runs stores each run's outcome and each model's pretraining record (default
    # OUTPUT_DIR/<dataset>/outcomes): a folder kept beyond the machine (committed beside a results
    # file) lets a later machine without the trained models read back every run it holds and
    # pretrain a model again only for a run it lacks
    outcomes_dir: str | None = None
    confusion_png: bool = True  # a confusion-matrix PNG per method/protocol at the largest budget
    progress: bool = False  # per-epoch lines from pretraining / fine-tuning
    # the pretraining runs' train.loggers where a model's own train section does not say (the many
    # small fine-tunes log as protocols.finetune.train.loggers says)
    loggers: list[LoggerName] | None = None

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
                  "a mapping with model / regularizers / train / augment sections")
            self.model_features(name)
            pcfg = self.pretrain_config(name, self.datasets[0])
            self._check_builders(name, pcfg)
            self._check_layer_decay(name, pcfg)
        self.protocols.validate("protocols", self.models)
        self.imbalance.validate("imbalance", self.models)

    def budgets_for(self, protocol: str) -> list[Budget]:
        own = getattr(self.protocols, protocol).labels
        return self.budgets if own is None else [
            b for b in parse_budgets(own, f"protocols.{protocol}.labels") if b in self.budgets]

    def runs(self, protocol: str, model: str) -> bool:
        """Whether ``protocol`` is on and evaluates autoencoder ``model``."""
        proto = getattr(self.protocols, protocol)
        return proto.enabled and (proto.models is None or model in proto.models)

    def studies_imbalance(self, model: str) -> bool:
        """Whether the imbalance study runs on autoencoder ``model``."""
        imb = self.imbalance
        return imb.ratio is not None and (imb.models is None or model in imb.models)

    def finetunes(self, model: str) -> bool:
        """Whether autoencoder ``model`` is fine-tuned: by the protocol or by the imbalance study."""
        return self.runs("finetune", model) or (
            self.studies_imbalance(model) and "finetune" in self.imbalance.protocols)

    def seeds_for(self, protocol: str, budget: Budget | None = None) -> int:
        """How many times ``protocol`` runs at ``budget``. With every label the subset is the same
        for every seed: the probe and kNN are then deterministic, one run says everything; a
        fine-tune's start still varies (``protocols.finetune.all_seeds``)."""
        own = getattr(self.protocols, protocol).seeds
        n = self.seeds if own is None else own
        if budget is None or not budget.is_all:
            return n
        if protocol != "finetune":
            return 1
        return self.protocols.finetune.all_seeds or n

    def model_features(self, name: str) -> FeatureConfig:
        entry = self.models[name]
        if "features" not in entry:
            return self.features
        feats = from_dict(FeatureConfig, entry["features"], f"models.{name}.features")
        feats.validate(f"models.{name}.features")
        return feats

    def model_finetune(self, name: str) -> FinetuneProtocol:
        """``protocols.finetune`` with model ``name``'s own ``finetune`` section merged over it: an
        architecture's recipe (a ViT's layer-wise decay and warmup) without changing the other
        models' runs. Which budgets, seeds and models it covers stays the protocol's."""
        own = self.models[name].get("finetune")
        if own is None:
            return self.protocols.finetune
        prefix = f"models.{name}.finetune"
        check(isinstance(own, dict), prefix, own, "a mapping of fine-tuning options")
        for key in own:
            check(key in MODEL_FINETUNE, f"{prefix}.{key}", own[key],
                  "a fine-tuning option (" + ", ".join(MODEL_FINETUNE) + "); budgets, seeds and "
                  "models are protocols.finetune's")
        cfg = from_dict(FinetuneProtocol, merged(to_dict(self.protocols.finetune), own), prefix)
        cfg.validate(prefix)
        return cfg

    def _check_layer_decay(self, name: str, pcfg: PretrainConfig) -> None:
        """Layer-wise decay needs an encoder that numbers its layers: said now, not after the
        model's pretraining has run for hours."""
        from aevision.models import MODELS

        decay = self.model_finetune(name).layer_decay
        if decay is None or not self.finetunes(name):
            return
        if "numbered_layers" in MODELS.get(pcfg.model.name).traits:
            return
        own = self.models[name].get("finetune") or {}
        where = f"models.{name}.finetune" if "layer_decay" in own else "protocols.finetune"
        layered = ", ".join(e.name for e in MODELS if "numbered_layers" in e.traits)
        raise ConfigError(f"{where}.layer_decay", decay,
                          f"null for model {name!r} ({pcfg.model.name}): layer-wise decay needs an "
                          f"encoder of numbered layers ({layered})")

    def pretrain_config(self, name: str, data: DataConfig) -> PretrainConfig:
        """The full pretrain config of model ``name`` on dataset ``data``."""
        fragment = {k: copy.deepcopy(v) for k, v in self.models[name].items()
                    if k not in ("features", "finetune")}
        for key in fragment:
            check(key in ("model", "regularizers", "train", "augment"), f"models.{name}.{key}",
                  fragment[key], "only model, regularizers, train, augment, features and finetune sections")
        fragment.setdefault("train", {}).setdefault("progress", self.progress)
        if self.loggers is not None:
            fragment["train"].setdefault("loggers", list(self.loggers))
        base = {"seed": self.seed, "data": to_dict(data),
                "output_dir": str(Path(self.output_dir) / "models" / safe_name(data.name) / name),
                **fragment}
        return build_config(base=base, prefix=f"models.{name}")

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
    before = set(data.get("models") or {}) if isinstance(data, dict) else set()
    for assignment in overrides or []:
        apply_override(data, assignment)
    if not isinstance(data, dict):
        raise AevisionError(f"benchmark {source!r}: expected a mapping at the top level")
    leave_out_null_models(data, before)
    # nested sections start from the defaults, so `finetune: {train: {epochs: 5}}` keeps the
    # other fine-tuning defaults (AdamW, cosine schedule) instead of the pretraining ones
    cfg: BenchmarkConfig = from_dict(BenchmarkConfig, merged(BenchmarkConfig().to_dict(), data), "")
    cfg.validate()
    return cfg


def leave_out_null_models(data: dict[str, Any], known: set[str]) -> None:
    """``models.NAME=null`` leaves NAME out: of ``models`` and of every protocol's (and the
    imbalance study's) ``models`` list, so one override runs a preset without one of its models.
    A NAME not among ``known`` (the models before the overrides) is a typo, refused: the run would
    keep the model it meant to leave out."""
    models = data.get("models")
    if not isinstance(models, dict):
        return
    gone = {name for name, entry in models.items() if entry is None}
    unknown = sorted(gone - known)
    if unknown:
        raise AevisionError(f"models.{unknown[0]}=null: no model {unknown[0]!r} to leave out (models: "
                            f"{', '.join(sorted(known)) or 'none'})")
    for name in gone:
        del models[name]
    sections = [*(data.get("protocols") or {}).values(), data.get("imbalance")]
    for section in sections:
        if isinstance(section, dict) and isinstance(section.get("models"), list):
            section["models"] = [m for m in section["models"] if m not in gone]
