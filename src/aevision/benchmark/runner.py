"""Run a benchmark: for each dataset, each model in turn is pretrained once and evaluated under
every protocol, label budget and seed (then its untrained control), then the baselines; the
predictions are scored on the test split.

The order of work keeps memory flat and reuses everything that can be reused: a model is
pretrained once (or loaded, when its folder already holds a run with the identical config), its
features are extracted once and shared by the linear probe and kNN at every budget and seed, then
freed before the next method; a benchmark killed after hours has finished whole models. With
``reuse_runs`` (``--resume``) a protocol run that an earlier benchmark finished from the identical
inputs (data, method config and weights, protocol config, budget, seed, aevision version) is read
back instead of run again: its test predictions are stored, so it is scored exactly like a fresh
one. Test labels are used in exactly one place,
:meth:`DatasetRun.score`.

Stored outcomes outlive the trained models when ``outcomes_dir`` is a folder kept elsewhere (a
benchmark of many CPU hours carried across machines that do not keep ``runs/``). Beside them each
model's pretraining record (its run key, weights hash and statistics) is stored; a model whose
folder lacks the finished run but whose record matches is *pending*: its runs are read back under
the recorded weights, and it is pretrained again only when a run is missing. If that pretraining
gives other weights, the model's runs read so far are dropped and all of them run on the new ones:
a model's rows never mix two pretrainings.
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from aevision.benchmark import leaderboard
from aevision.benchmark.config import SCOPE, BenchmarkConfig, Budget, FinetuneProtocol, safe_name
from aevision.benchmark.protocols import Outcome, finetune_protocol, knn, linear
from aevision.config import DataConfig, PretrainConfig, to_dict
from aevision.data import ImageSet, Splits, labelled_subset, load_dataset
from aevision.data.splits import long_tailed_subset
from aevision.engine.run import RECORD, Run, digest, run_key, weights_sha256
from aevision.errors import AevisionError
from aevision.io import read_json, write_json
from aevision.models import Autoencoder, load_model
from aevision.provenance import machine_info
from aevision.tasks.features import FeatureEncoder, extract
from aevision.tasks.html_report import write_report
from aevision.tasks.losses import LossConfig
from aevision.tasks.metrics import classification_metrics, save_confusion
from aevision.tasks.pretrain import PretrainResult, model_from_config, pretrain
from aevision.tasks.probe import Scaling
from aevision.tasks.streamed_data import data_key

Say = Callable[[str], None]


@dataclass
class Method:
    """Something that turns images into features: an autoencoder or a baseline."""

    name: str
    kind: str  # "autoencoder" or "baseline"
    config: dict[str, Any]
    dim: int = 0
    features: tuple[Tensor, Tensor | None, Tensor] | None = None  # train, val, test
    encoder: Callable[[int], FeatureEncoder] | None = None  # a fresh trainable copy, given a seed
    stats: dict[str, Any] = field(default_factory=dict)  # e.g. the FeatureEncoder to extract with
    weights_sha256: str | None = None  # with reuse_runs: a pretrained model's weights, part of a run's inputs
    standardize: Scaling = "feature"  # how the linear probe scales the features (PCA: "global")
    # an autoencoder known only by its stored pretraining record: trained on a run's first need
    pending: bool = False

    @property
    def probes(self) -> bool:
        """Has features for the probe and kNN, extracted or (pending) to be on a run's first need."""
        return self.features is not None or self.pending

    @property
    def tunes(self) -> bool:
        """Has an encoder to fine-tune, now or (pending) once pretrained on a run's first need."""
        return self.encoder is not None or self.pending


class Retrained(Exception):
    """A pending model was pretrained again and its weights differ from the recorded ones."""


@dataclass
class BenchmarkResult:
    out_dir: Path
    board: dict[str, Any]  # what leaderboard.json holds

    @property
    def rows(self) -> list[dict[str, Any]]:
        return self.board["rows"]

    @property
    def records(self) -> list[dict[str, Any]]:
        return self.board["records"]


def run_benchmark(cfg: BenchmarkConfig, *, verbose: bool = True, command: str | None = None
                  ) -> BenchmarkResult:
    """Run everything ``cfg`` asks for; write the leaderboard (Markdown, CSV, JSON), plots and
    ``report.html`` (everything on one page)."""
    out = Path(cfg.output_dir)
    say: Say = print if verbose else (lambda _s: None)
    started = time.time()
    load_start = os.getloadavg()
    records: list[dict[str, Any]] = []
    datasets: dict[str, Any] = {}
    for data_cfg in cfg.datasets:
        run = DatasetRun(cfg, data_cfg, out, say)
        run.run()
        records += run.records
        datasets[data_cfg.name] = run.summary()
    board = leaderboard.build(cfg, records, datasets, {
        "wall_seconds": round(time.time() - started, 2),
        "load_average_start": [round(v, 2) for v in load_start],
        "load_average_end": [round(v, 2) for v in os.getloadavg()],
        "machine": machine_info(),
        "command": command,
    })
    leaderboard.write(out, board)
    page = write_report(out)
    if verbose:
        leaderboard.print_board(board)
        say(f"wrote {out}/leaderboard.md, leaderboard.csv, leaderboard.json, plots and {page.path} "
            f"({board['run']['wall_seconds']:.0f}s)")
    return BenchmarkResult(out, board)


def pretrain_models(cfg: BenchmarkConfig, models: list[str] | None = None, *, verbose: bool = True
                    ) -> dict[str, dict[str, Any]]:
    """Pretrain (or find already pretrained) ``models`` (default all) on every dataset, nothing else.

    Separate processes may pretrain different models at the same time; a later
    :func:`run_benchmark` with the same config then reuses all of them.
    """
    say: Say = print if verbose else (lambda _s: None)
    stats: dict[str, dict[str, Any]] = {}
    for name in models or list(cfg.models):
        if name not in cfg.models:
            raise AevisionError(f"--models: {name!r} is not one of the benchmark's models "
                                f"({', '.join(cfg.models)})")
    for data_cfg in cfg.datasets:
        run = DatasetRun(cfg, data_cfg, Path(cfg.output_dir), say)
        for name in models or list(cfg.models):
            _, st = run._pretrain_or_reuse(name, cfg.pretrain_config(name, data_cfg))
            stats[f"{data_cfg.name}/{name}"] = {k: v for k, v in st.items() if k != "history"}
    return stats


class DatasetRun:
    """Everything the benchmark does on one dataset."""

    def __init__(self, cfg: BenchmarkConfig, data_cfg: DataConfig, out: Path, say: Say):
        self.cfg, self.data_cfg, self.say = cfg, data_cfg, say
        self.name = data_cfg.name
        self.out = out / safe_name(data_cfg.name)
        self.records: list[dict[str, Any]] = []
        self.pretraining: dict[str, Any] = {}
        self.methods: dict[str, dict[str, Any]] = {}
        self._controls: dict[str, str] = {}  # an untrained encoder's identity -> its control's label
        self._legacy: dict[Path, dict[str, Path]] = {}  # see _unscoped
        self.store = (Path(cfg.outcomes_dir) / safe_name(data_cfg.name) if cfg.outcomes_dir
                      else self.out / "outcomes")  # stored outcomes and pretraining records
        self.splits = self._load()
        self.train: ImageSet = self.splits.train
        self.val: ImageSet | None = self.splits.val
        self.test: ImageSet = self.splits.test  # type: ignore[assignment]
        self.k = self.train.num_classes
        self.classes = self.train.classes or [str(i) for i in range(self.k)]
        self.largest = max(cfg.budgets, key=lambda b: b.sort_key(self.k))

    def _load(self) -> Splits:
        splits = load_dataset(self.data_cfg, self.cfg.seed)
        if splits.train.labels is None:
            raise AevisionError(f"datasets: {self.name!r} has no labels; a classification benchmark "
                                f"needs labelled images (class subfolders for folder:PATH)")
        if splits.test is None or splits.test.labels is None:
            raise AevisionError(f"datasets: {self.name!r} has no labelled test split; for a folder "
                                f"set test_fraction, e.g. datasets[0].test_fraction=0.2")
        return splits

    def summary(self) -> dict[str, Any]:
        val = self.val
        return {"config": to_dict(self.data_cfg), "classes": self.classes,
                "train": len(self.train), "val": len(val) if val is not None else 0,
                "test": len(self.test), "image_shape": list(self.train.image_shape),
                "pretraining": self.pretraining, "methods": self.methods}

    # --- the plan ---------------------------------------------------------------------------

    def run(self) -> None:
        t, v = len(self.train), len(self.val) if self.val is not None else 0
        self.say(f"[{self.name}] {t} train / {v} val / {len(self.test)} test images, "
                 f"{'x'.join(map(str, self.train.image_shape))}, {self.k} classes")
        self._check_features()
        models: dict[str, Method] = {}
        for name in self.cfg.models:  # one at a time: pretrained and evaluated, then the next
            models[name] = self._pretrained(name)
            self._evaluate_method(models[name])
        dims = sorted({min(m.dim, self._pixels_dim(), len(self.train)) for m in models.values()})
        if "pixels" in self.cfg.baselines:
            self._evaluate_method(self._pixels())
        if "pca" in self.cfg.baselines:
            for d in dims or [min(32, self._pixels_dim())]:
                self._evaluate_method(self._pca(d))
        if "scratch" in self.cfg.baselines and self.cfg.protocols.finetune.enabled:
            for method in self._scratch_methods(models):
                self._evaluate(method)
        self._figures(models)

    def _evaluate_method(self, method: Method) -> None:
        """Every protocol run of ``method``, then of an autoencoder's untrained control. A model is
        done before the next one pretrains: what a killed benchmark stored is whole models."""
        mark = len(self.records)
        try:
            self._runs_of(method)
        except Retrained:  # its recorded weights are gone: every run again on the new ones
            del self.records[mark:]
            self.say(f"[{self.name}] {method.name}: pretrained again, other weights than its stored "
                     f"runs'; running all of its runs")
            self._runs_of(method)
        method.features = None  # free the memory before the next method
        control = (self._untrained(method.name)
                   if method.kind == "autoencoder" and "untrained" in self.cfg.baselines else None)
        if control is not None:
            self._extract(control)
            self._evaluate(control)
            control.features = None

    def _runs_of(self, method: Method) -> None:
        """Its protocols (an autoencoder's features first, unless pending) and imbalance study."""
        if method.kind == "autoencoder" and not method.pending:
            self._extract(method)
        self._evaluate(method)
        if method.kind == "autoencoder" and self.cfg.studies_imbalance(method.name):
            self._imbalance(method)

    # --- methods ----------------------------------------------------------------------------

    def _pixels_dim(self) -> int:
        c, h, w = self.train.image_shape
        return c * h * w

    def _check_features(self) -> None:
        """Every model's ``features`` section against its architecture at this image size (a flat
        code cannot be pooled, a dense encoder has no stage maps): said before the first
        pretraining, not after hours of it. Builds untrained models without touching the global
        random state the pretrainings draw from."""
        with torch.random.fork_rng(devices=[]):
            for name in self.cfg.models:
                pcfg = self.cfg.pretrain_config(name, self.data_cfg)
                model = model_from_config(pcfg, self.train.image_shape)
                FeatureEncoder(model, copy.deepcopy(self.cfg.model_features(name)), f"models.{name}.features")

    def _pretrained(self, name: str) -> Method:
        """A pretrained model as a method; its features are extracted later, one method at a time.
        Pending (not trained now) when only its stored pretraining record is here."""
        pcfg = self.cfg.pretrain_config(name, self.data_cfg)
        config = {"pretrain": pcfg.to_dict(), "features": to_dict(self.cfg.model_features(name))}
        if "finetune" in self.cfg.models[name]:  # its own fine-tuning recipe, part of its runs' keys
            config["finetune"] = copy.deepcopy(self.cfg.models[name]["finetune"])
        record = self._pretraining_record(name, pcfg)
        if record is not None:
            stats = {**record["stats"], "reused": True, "read_back_from": str(self._record_path(name))}
            self.pretraining[name] = stats
            self.methods[name] = {"kind": "autoencoder", "dim": stats["feature_dim"], "config": config}
            self.say(f"[{self.name}] {name}: its pretraining's record is stored; pretraining again only "
                     f"for a run that is not")
            return Method(name, "autoencoder", config, stats["feature_dim"], None, None, {},
                          record["weights_sha256"], pending=True)
        method = Method(name, "autoencoder", config)
        self._attach(method, pcfg)
        return method

    def _attach(self, method: Method, pcfg: PretrainConfig) -> None:
        """Pretrain (or read back) ``method``'s model and give the method its encoder, feature
        dimension and weights hash (stored with its pretraining record under ``reuse_runs``)."""
        name = method.name
        model, stats = self._pretrain_or_reuse(name, pcfg)
        feats_cfg = self.cfg.model_features(name)
        fe = FeatureEncoder(model, copy.deepcopy(feats_cfg), f"models.{name}.features")

        def encoder(seed: int) -> FeatureEncoder:
            return FeatureEncoder(copy.deepcopy(model), copy.deepcopy(feats_cfg))

        stats["feature_dim"] = method.dim = fe.dim
        self.pretraining[name] = stats
        self.methods[name] = {"kind": "autoencoder", "dim": fe.dim, "config": method.config}
        method.encoder, method.stats["features"] = encoder, fe
        method.weights_sha256 = weights_sha256(pcfg.output_dir) if self.cfg.reuse_runs else None
        if self.cfg.reuse_runs and not self._recorded(name, method.weights_sha256, stats):
            write_json(self._record_path(name), {"inputs": self._pretraining_key(pcfg),
                                                 "weights_sha256": method.weights_sha256, "stats": stats})

    def _recorded(self, name: str, weights: str | None, stats: dict[str, Any]) -> bool:
        """A model read back from its folder whose record already names these weights: that record
        (the statistics of the run that trained them) stays as it is."""
        path = self._record_path(name)
        if not stats.get("reused") or not path.is_file():
            return False
        try:
            return read_json(path, "pretraining record").get("weights_sha256") == weights
        except AevisionError:
            return False

    def _ensure(self, method: Method, features: bool) -> None:
        """Before a run that is not stored: a pending model pretrained (raising :class:`Retrained`
        when its weights differ from the recorded ones), and its features when the run needs them."""
        if method.pending:
            recorded = method.weights_sha256
            method.pending = False
            self._attach(method, self.cfg.pretrain_config(method.name, self.data_cfg))
            if method.weights_sha256 != recorded:
                raise Retrained(method.name)
        if features and method.features is None:
            self._extract(method)

    @cached_property
    def _data_key(self) -> str:
        """The fingerprint of the training pixels (a hash of every image): once per dataset."""
        return data_key(self.splits, None)

    def _pretraining_key(self, pcfg: PretrainConfig) -> dict[str, Any]:
        """The run key :func:`pretrain` gives this pretraining on this dataset's splits."""
        return run_key(pcfg.to_dict(), data=self._data_key)

    def _record_path(self, name: str) -> Path:
        return self.store / "pretraining" / f"{safe_name(name)}.json"

    def _pretraining_record(self, name: str, pcfg: PretrainConfig) -> dict[str, Any] | None:
        """The stored record of ``name``'s identical pretraining, when its own folder lacks that
        finished run (with ``reuse_runs`` and ``reuse_pretrained`` only)."""
        if not (self.cfg.reuse_runs and self.cfg.reuse_pretrained) or not self._record_path(name).is_file():
            return None
        key = self._pretraining_key(pcfg)
        if Run(pcfg.output_dir, key).finished() is not None:
            return None  # the model itself is here
        try:
            record = read_json(self._record_path(name), "pretraining record")
        except AevisionError as e:
            self.say(f"[{self.name}] {e}; pretraining {name}")
            return None
        return record if record.get("inputs") == key and isinstance(record.get("stats"), dict) else None

    def _extract(self, method: Method) -> None:
        """Features of the train / val / test images for the probe and kNN (timed)."""
        fe: FeatureEncoder = method.stats["features"]
        started = time.perf_counter()
        method.features = (extract(fe, self.train),
                           extract(fe, self.val) if self.val is not None else None,
                           extract(fe, self.test))
        seconds = time.perf_counter() - started
        n = len(self.train) + len(self.test) + (len(self.val) if self.val is not None else 0)
        where = self.pretraining if method.kind == "autoencoder" else self.methods
        where[method.name].update({
            "features_seconds": round(seconds, 3),
            "features_images_per_s": round(n / seconds, 1) if seconds > 0 else None})
        self.say(f"[{self.name}] features of {method.name}: {method.dim} per image ({seconds:.1f}s)")

    def _pretrain_or_reuse(self, name: str, pcfg: PretrainConfig) -> tuple[Autoencoder, dict[str, Any]]:
        """Pretrain ``name``, or with ``reuse_pretrained`` read back the identical finished run (same
        config, data and aevision version: the run lifecycle's key) and resume an unfinished one."""
        reuse = self.cfg.reuse_pretrained
        if not (reuse and (Path(pcfg.output_dir) / RECORD).is_file()):
            self.say(f"[{self.name}] pretraining {name} ({pcfg.train.epochs} epochs)")
        load0 = os.getloadavg()[0]
        result = pretrain(pcfg, data=self.splits, reuse=reuse, overwrite=True)  # the benchmark's folders
        stats = _pretrain_stats(result, [round(load0, 2), round(os.getloadavg()[0], 2)])
        if result.reused:
            self.say(f"[{self.name}] reusing pretrained {name} from {pcfg.output_dir} "
                     f"(trained in {stats['wall_seconds']:.0f}s)")
        else:
            recon = stats.get("val_recon")  # 4 significant digits, not 16
            self.say(f"[{self.name}] pretrained {name}: {stats['wall_seconds']:.0f}s, "
                     f"val recon {'n/a' if recon is None else f'{recon:.4g}'}")
        return result.model, stats

    def _untrained(self, name: str) -> Method | None:
        """The control of autoencoder ``name``: the same encoder with random weights (those its
        pretraining started from: the same seed, drawn the same way), read through the same
        features by the same probe and kNN. What the autoencoder gains over it is what pretraining
        itself adds (random conv features are no weak baseline: Jarrett et al. 2009, Saxe et al.
        2011). None when an earlier model's control is this very encoder (the same architecture,
        code transforms, features, seed and protocols: models that differ only in a penalty or a
        corruption): ``name`` then shares that control instead of probing it again."""
        pcfg = self.cfg.pretrain_config(name, self.data_cfg)
        feats_cfg = self.cfg.model_features(name)
        torch.manual_seed(pcfg.seed)
        model = model_from_config(pcfg, self.train.image_shape)
        identity = self._encoder_identity(name, pcfg, feats_cfg, model)
        if identity in self._controls:
            self.methods[name]["untrained_control"] = label = self._controls[identity]
            self.methods[label]["control_of"].append(name)
            self.say(f"[{self.name}] untrained control of {name}: {label} (the same random encoder)")
            return None
        fe = FeatureEncoder(model, copy.deepcopy(feats_cfg), f"models.{name}.features")
        label = self._controls[identity] = f"untrained:{name}"
        config = {"baseline": "untrained encoder", "untrained_of": name, "seed": pcfg.seed,
                  "model": to_dict(pcfg.model), "regularizers": [to_dict(r) for r in pcfg.regularizers],
                  "features": to_dict(feats_cfg)}
        self.methods[label] = {"kind": "control", "dim": fe.dim, "config": config, "control_of": [name]}
        self.methods[name]["untrained_control"] = label  # what the leaderboard compares it with
        return Method(label, "control", config, fe.dim, stats={"features": fe})

    def _encoder_identity(self, name: str, pcfg: PretrainConfig, feats_cfg: Any, model: Autoencoder) -> str:
        """What an untrained ``name`` computes and how it is evaluated, as a string: equal strings,
        equal controls."""
        configured = model.regularizers[len(model.regularizers) - len(pcfg.regularizers):]
        transforms = [to_dict(r) for r, reg in zip(pcfg.regularizers, configured, strict=True)
                      if reg.transforms_code]
        return json.dumps({"model": to_dict(pcfg.model), "code_transforms": transforms, "seed": pcfg.seed,
                           "features": to_dict(feats_cfg),
                           "protocols": [p for p in ("linear", "knn") if self.cfg.runs(p, name)]},
                          sort_keys=True, default=str)

    def _pixels(self) -> Method:
        def flat(s: ImageSet | None) -> Tensor | None:
            return s.floats().flatten(1) if s is not None else None

        d = self._pixels_dim()
        self.methods["pixels"] = {"kind": "baseline", "dim": d, "config": {"baseline": "pixels"}}
        return Method("pixels", "baseline", {"baseline": "pixels", "dim": d}, d,
                      (flat(self.train), flat(self.val), flat(self.test)))  # type: ignore[arg-type]

    def _pca(self, dim: int) -> Method:
        from sklearn.decomposition import PCA

        started = time.perf_counter()
        x = self.train.floats().flatten(1).numpy()
        pca = PCA(n_components=dim, svd_solver="randomized" if dim < min(x.shape) else "full",
                  random_state=self.cfg.seed).fit(x)

        def proj(s: ImageSet | None) -> Tensor | None:
            return None if s is None else torch.from_numpy(
                pca.transform(s.floats().flatten(1).numpy())).float()

        name = f"pca-{dim}"
        # the probe keeps the components' variances (one scale for all): a projection of the
        # pixels, not a whitening, which lifted the noisiest directions to the weight of the first
        # (MNIST, 10 labels per class: PCA-128 0.548 whitened vs 0.744 for the pixels themselves)
        config = {"baseline": "pca", "dim": dim, "fitted_on": "unlabelled training images",
                  "explained_variance": round(float(pca.explained_variance_ratio_.sum()), 4),
                  "standardize": "global"}
        self.methods[name] = {"kind": "baseline", "dim": dim, "config": config,
                              "fit_seconds": round(time.perf_counter() - started, 2)}
        return Method(name, "baseline", config, dim,
                      (proj(self.train), proj(self.val), proj(self.test)),  # type: ignore[arg-type]
                      standardize="global")

    def _scratch_methods(self, models: dict[str, Method]) -> list[Method]:
        """One supervised baseline per distinct architecture (model section + features) among
        the fine-tuned models; each fine-tuned model's entry in ``methods`` names its baseline."""
        seen: dict[str, Method] = {}
        for name, m in models.items():
            if not self.cfg.runs("finetune", name):
                continue
            arch = {"model": m.config["pretrain"]["model"], "features": m.config["features"]}
            # models of one architecture share a baseline only if they share its recipe too
            recipe = m.config.get("finetune")
            key = json.dumps({**arch, "recipe": recipe}, sort_keys=True)
            if key in seen:
                self.methods[name]["scratch_baseline"] = seen[key].name
                continue
            pcfg = self.cfg.pretrain_config(name, self.data_cfg)
            feats_cfg = self.cfg.model_features(name)
            shape = self.train.image_shape

            def encoder(seed: int, pcfg: PretrainConfig = pcfg, feats_cfg: Any = feats_cfg,
                        shape: Any = shape) -> FeatureEncoder:
                torch.manual_seed(seed)
                # the same model, untrained: corruptions never reach a FeatureEncoder, code
                # transforms (top-k, winner-take-all) stay part of the architecture
                fresh = model_from_config(pcfg, shape)
                return FeatureEncoder(fresh, copy.deepcopy(feats_cfg))

            config = {"baseline": "supervised from scratch", "architecture_of": name, **arch}
            if recipe is not None:
                config["finetune"] = recipe
            label = f"scratch:{name}"
            self.methods[label] = {"kind": "baseline", "config": config}
            self.methods[name]["scratch_baseline"] = label  # what the leaderboard compares it with
            seen[key] = Method(label, "baseline", config, m.dim, None, encoder)
        return list(seen.values())

    # --- protocols --------------------------------------------------------------------------

    def _evaluate(self, method: Method) -> None:
        cfg = self.cfg
        for protocol in ("linear", "knn", "finetune"):
            proto = getattr(cfg.protocols, protocol)
            own = method.config.get("untrained_of", method.name)  # a control runs where its model does
            if not proto.enabled or (method.kind != "baseline" and not cfg.runs(protocol, own)):
                continue
            if protocol == "finetune" and not method.tunes:
                continue  # pixels and PCA have nothing to fine-tune
            if protocol != "finetune" and not method.probes:
                continue  # the scratch baseline has no pretrained features (nor a control:
                # fine-tuning its untrained encoder is the scratch baseline)
            for budget in cfg.budgets_for(protocol):
                for s in range(cfg.seeds_for(protocol, budget)):
                    self._one(method, protocol, budget, cfg.seed + s)

    def _finetune_cfg(self, method: Method) -> FinetuneProtocol:
        """The model's fine-tuning recipe (``protocols.finetune`` + its own ``finetune`` section).
        Its scratch baseline trains the same network from random weights with the same recipe (a
        random head, ``encoder_lr_scale`` 1); layer-wise decay included: on digits it made the scratch
        ViT stronger (``bench/mae.py``: 0.942 test accuracy with it, 0.909 without)."""
        if method.kind == "baseline":
            return replace(self.cfg.model_finetune(method.config["architecture_of"]), init="scratch")
        return self.cfg.model_finetune(method.name)

    def _subset(self, budget: Budget, seed: int) -> Tensor:
        assert self.train.labels is not None
        return labelled_subset(self.train.labels, budget.per_class, seed, budget.total)

    def _one(self, method: Method, protocol: str, budget: Budget, seed: int) -> None:
        cfg = self.cfg
        idx = self._subset(budget, seed)
        y = self.train.labels[idx]  # type: ignore[index]
        val_labels = self.val.labels if self.val is not None else None
        use_val = budget.is_all and self.val is not None and val_labels is not None

        proto_cfg = self._finetune_cfg(method) if protocol == "finetune" else getattr(cfg.protocols, protocol)

        def run() -> Outcome:
            self._ensure(method, features=protocol != "finetune")
            if protocol == "finetune":
                return finetune_protocol(
                    method.encoder(seed), self.train.subset(idx), self.val if use_val else None,  # type: ignore[misc]
                    self.test.images, proto_cfg,
                    self.out / "runs" / safe_name(method.name) / f"{protocol}-{safe_name(budget.name)}"
                    / f"seed{seed}", n_classes=self.k, seed=seed, progress=cfg.progress,
                    resume=cfg.reuse_runs)
            f_train, f_val, f_test = method.features  # type: ignore[misc]
            if protocol == "linear":
                return linear((f_train[idx], y), (f_val, val_labels) if use_val else None,  # type: ignore[arg-type]
                              f_test, cfg.protocols.linear, n_classes=self.k, seed=seed,
                              scaler_data=f_train, standardize=method.standardize)
            return knn((f_train[idx], y), f_test, cfg.protocols.knn, n_classes=self.k)

        ran = to_dict(proto_cfg)
        outcome = self._run_or_reuse(method, run, protocol=protocol, protocol_config=ran,
                                     budget=budget.name, seed=seed, validation=use_val)
        self.score(method, protocol, budget.name, seed, outcome, ran, labels=len(idx),
                   confusion=budget == self.largest and seed == cfg.seed)

    def _imbalance(self, method: Method) -> None:
        """Plain vs class-weighted loss on a long-tailed training set (balanced accuracy)."""
        imb = self.cfg.imbalance
        ratio = float(imb.ratio)  # type: ignore[arg-type]
        assert self.train.labels is not None
        losses = {"plain": LossConfig(), f"weighted:{_loss_name(imb.weighted)}": imb.weighted}
        for s in range(imb.seeds or self.cfg.seeds):
            seed = self.cfg.seed + s
            idx = long_tailed_subset(self.train.labels, ratio, seed)
            vidx = (long_tailed_subset(self.val.labels, ratio, seed)
                    if self.val is not None and self.val.labels is not None else None)
            val = self.val.subset(vidx) if vidx is not None else None  # type: ignore[union-attr]
            for loss_name, loss in losses.items():
                for protocol in imb.protocols:
                    run: Callable[[], Outcome]
                    if protocol == "linear" and method.probes:
                        proto_cfg: Any = self.cfg.protocols.linear

                        def run(idx: Tensor = idx, vidx: Tensor | None = vidx, val: ImageSet | None = val,
                                loss: LossConfig = loss, seed: int = seed) -> Outcome:
                            self._ensure(method, features=True)
                            f_train, f_val, f_test = method.features  # type: ignore[misc]
                            return linear(
                                (f_train[idx], self.train.labels[idx]),  # type: ignore[index]
                                (f_val[vidx], val.labels) if val is not None else None,  # type: ignore[index]
                                f_test, self.cfg.protocols.linear, n_classes=self.k, seed=seed,
                                scaler_data=f_train, class_weight=loss.class_weight,
                                metric="balanced_accuracy", standardize=method.standardize)
                    elif protocol == "finetune" and method.tunes:
                        proto_cfg = replace(self._finetune_cfg(method), loss=loss)

                        def run(idx: Tensor = idx, val: ImageSet | None = val, proto_cfg: Any = proto_cfg,
                                loss_name: str = loss_name, seed: int = seed) -> Outcome:
                            self._ensure(method, features=False)
                            return finetune_protocol(
                                method.encoder(seed), self.train.subset(idx), val,  # type: ignore[misc]
                                self.test.images, proto_cfg,
                                self.out / "runs" / safe_name(method.name) / f"imbalance-{loss_name}"
                                / f"seed{seed}", n_classes=self.k, seed=seed, progress=self.cfg.progress,
                                resume=self.cfg.reuse_runs)
                    else:
                        continue
                    ran = to_dict(proto_cfg)
                    outcome = self._run_or_reuse(
                        method, run, protocol=protocol, protocol_config=ran, budget="all",
                        seed=seed, validation=val is not None, imbalance=ratio, loss=to_dict(loss))
                    self.score(method, protocol, "all", seed, outcome, ran, labels=len(idx),
                               imbalance=ratio, loss=loss_name, loss_config=to_dict(loss),
                               confusion=seed == self.cfg.seed)

    def _run_or_reuse(self, method: Method, run: Callable[[], Outcome], **inputs: Any) -> Outcome:
        """``run()``, or with ``reuse_runs`` the stored outcome of a run from identical inputs.

        The stored outcome holds test *predictions*, never scores: a reused run goes through
        :meth:`score` like a fresh one. Inputs include the weights' hash and aevision's version,
        not the code itself: a change to a protocol between runs needs a fresh benchmark."""
        if not self.cfg.reuse_runs:
            return run()
        key = without_scope(run_key({"method": method.name, "method_config": method.config, **inputs},
                                    data=json.dumps(to_dict(self.data_cfg), sort_keys=True),
                                    init=method.weights_sha256, benchmark_seed=self.cfg.seed))
        folder = self.store / safe_name(method.name)
        path = folder / f"{digest(key)}.json"
        done = self._stored(path, key)
        if done is not None:
            return Outcome(torch.tensor(done["pred"]), done["selection"], done["seconds"],
                           done["images"], done["history"], reused=True)
        outcome = run()
        write_json(path, {"inputs": key, "pred": outcome.pred.tolist(), "selection": outcome.selection,
                          "seconds": outcome.seconds, "images": outcome.images,
                          "history": outcome.history}, indent=None)  # one line: 10,000 predictions
        return outcome

    def _stored(self, path: Path, key: dict[str, Any]) -> dict[str, Any] | None:
        """The stored outcome of the run ``key`` names: at ``path``, else the file in the folder
        stored while a protocol's scope was part of the key (under that key's digest) whose inputs,
        read without the scope, are ``key``."""
        if not path.is_file():
            path = self._unscoped(path.parent).get(path.name, path)
            if not path.is_file():
                return None
        try:
            done = read_json(path, "stored run")
        except AevisionError as e:  # e.g. edited by hand: run it again, and say so
            self.say(f"[{self.name}] {e}; running it again")
            return None
        if isinstance(done.get("inputs"), dict) and without_scope(done["inputs"]) == key:
            return done
        return None

    def _unscoped(self, folder: Path) -> dict[str, Path]:
        """The outcomes in ``folder`` stored under a key with a protocol's scope, by the file name
        their key without it has. Read once per folder and run: a miss must not reread them all."""
        if folder not in self._legacy:
            index = self._legacy[folder] = {}
            for candidate in sorted(folder.glob("*.json")):
                try:
                    inputs = read_json(candidate, "stored run").get("inputs")
                except AevisionError:  # another run's damaged file is that run's to report
                    continue
                if isinstance(inputs, dict):
                    name = f"{digest(without_scope(inputs))}.json"
                    if name != candidate.name:
                        index.setdefault(name, candidate)
        return self._legacy[folder]

    # --- scoring: the only place test labels are read ------------------------------------------

    def score(self, method: Method, protocol: str, budget: str, seed: int, outcome: Outcome,
              proto_cfg: dict[str, Any], *, labels: int, imbalance: float | None = None,
              loss: str | None = None, loss_config: dict[str, Any] | None = None,
              confusion: bool = False) -> None:
        """Score ``outcome`` on the test labels and record it with ``proto_cfg``, the protocol's
        config that ran (the imbalance study's ``loss_config`` added)."""
        m = classification_metrics(outcome.pred, self.test.labels, self.k, self.classes)  # type: ignore[arg-type]
        if loss_config is not None:
            proto_cfg = {**proto_cfg, "loss": loss_config}
        record = {
            "dataset": self.name, "method": method.name, "kind": method.kind, "protocol": protocol,
            "budget": budget, "labels": labels, "labels_per_class": round(labels / self.k, 2),
            "imbalance": imbalance, "loss": loss, "seed": seed,
            "accuracy": m["accuracy"], "balanced_accuracy": m["balanced_accuracy"],
            "macro_f1": m["macro_f1"],
            "wall_seconds": round(outcome.seconds, 3),
            "images_per_s": round(outcome.images / outcome.seconds, 1) if outcome.seconds > 0 else None,
            "selection": outcome.selection,
            "reused": outcome.reused,  # read back from an earlier run (reuse_runs): its time and speed
            "per_class": m["per_class"], "confusion_matrix": m["confusion_matrix"],
            # which test images it got right: a run at `all` is compared with McNemar's test
            "test_correct": leaderboard.correct_bits(outcome.pred, self.test.labels),  # type: ignore[arg-type]
            "config": {"data": to_dict(self.data_cfg), "method": method.config,
                       "protocol": proto_cfg, "seed": seed},
        }
        self.records.append(record)
        extra = f" imbalance 1:{imbalance:g} {loss}" if imbalance else ""
        self.say(f"[{self.name}] {method.name:<16} {protocol:<8} {budget:<10} seed {seed}{extra}: "
                 f"acc {m['accuracy']:.4f}  bal {m['balanced_accuracy']:.4f}  "
                 f"({outcome.seconds:.1f}s{', reused' if outcome.reused else ''})")
        if confusion and self.cfg.confusion_png:
            stem = "__".join(safe_name(p) for p in (method.name, protocol, budget, loss or "") if p)
            save_confusion(self.out / "confusion" / stem, m,
                           f"{self.name}: {method.name}, {protocol}, {budget}{extra}")

    # --- figures ----------------------------------------------------------------------------

    def _figures(self, models: dict[str, Method]) -> None:
        if not models:
            return
        from aevision.report.plots import loss_curves, reconstruction_grid, shown_like

        shown = self.test.floats(slice(0, 12))
        recons = {}
        for name in models:
            if models[name].pending:  # not trained here (its pretraining record is stored)
                continue
            model = load_model(self.cfg.pretrain_config(name, self.data_cfg).output_dir)
            if model.reconstructs == "images":  # not patches' whitened patch vectors
                with torch.no_grad():
                    recons[name] = shown_like(model.reconstruct(shown), shown)
        if recons:
            reconstruction_grid(self.out / "reconstructions.png", shown, recons)
        loss_curves(self.out / "loss_curves.png",
                    {n: self.pretraining[n].get("history", []) for n in models})


def without_scope(key: dict[str, Any]) -> dict[str, Any]:
    """A stored run's key without its protocol's scope (:data:`SCOPE`: which runs the protocol
    makes): three seeds instead of one reads back the run of the first."""
    config = key.get("config")
    if not isinstance(config, dict) or not isinstance(config.get("protocol_config"), dict):
        return key
    kept = {k: v for k, v in config["protocol_config"].items() if k not in SCOPE}
    return {**key, "config": {**config, "protocol_config": kept}}


def _loss_name(loss: LossConfig) -> str:
    scheme = loss.class_weight if isinstance(loss.class_weight, str) else "user"
    extra = f",focal{loss.focal_gamma:g}" if loss.focal_gamma else ""
    return scheme + extra


def _pretrain_stats(result: PretrainResult, load_average: list[float]) -> dict[str, Any]:
    """What the leaderboard says of a pretraining run: its config, timing, speed and last losses."""
    history = result.fit.history
    last = history[-1] if history else {}
    speeds = [h["images_per_s"] for h in history if h.get("images_per_s")]
    return {
        "config": result.config.to_dict(), "reused": result.reused, "epochs": len(history),
        "wall_seconds": result.timing.get("wall_seconds"), "cpu_seconds": result.timing.get("cpu_seconds"),
        "train_seconds": result.fit.train_seconds,
        "load_average_1min": None if result.reused else load_average,
        "images_per_s": round(sum(speeds) / len(speeds), 1) if speeds else None,
        "best_epoch": result.fit.best_epoch, "val_recon": last.get("val_recon"),
        "val_loss": last.get("val_loss"), "history": history,
    }
