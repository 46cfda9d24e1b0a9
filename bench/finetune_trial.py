"""Trial: how well one model of a benchmark preset fine-tunes, pretrained and from scratch, judged on
the validation split. Never the test split: this is how a preset's fine-tuning recipe is chosen.

A preset's model entry (as changed by the overrides) is pretrained on the preset's training split
(in ``--runs``, the folder ``bench/probe_trial.py`` uses, so either script reads the other's
pretraining back with ``--reuse``); then the preset's fine-tuning recipe for that model
(``protocols.finetune`` with the model's own ``finetune`` section) trains it with all training
labels from the pretrained weights, and the same network from the random weights its pretraining
started from with the scratch baseline's recipe (the benchmark's two fine-tune runs). Each keeps the
epoch with the lowest validation loss (the benchmark's rule) and reports its validation accuracy and
every epoch's validation loss and error. The validation split both picks the epoch and scores it, so
the numbers are a little optimistic; they compare recipes, the benchmark's test score is the
result. ``--init scratch`` pretrains nothing: the scratch network is the twin of the weights the
pretraining would start from. Fine-tunes are resumable (``--reuse``): a killed one continues from
its checkpoint.

    python bench/finetune_trial.py cifar10 conv-rgb "datasets=[{name: folder:$AEVISION_DATA/cifar10-jpeg}]" \\
        "protocols.finetune.train.epochs=30" --init scratch --out bench/results/trials/finetune_cifar10.json
"""

from __future__ import annotations

import copy
import resource
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import common
from aevision.benchmark.config import BenchmarkConfig
from aevision.config import to_dict
from aevision.data import Splits
from aevision.models import Autoencoder
from aevision.tasks.features import FeatureEncoder
from aevision.tasks.finetune import FinetuneConfig, finetune

HISTORY = ("epoch", "phase", "train_loss", "val_loss", "val_error", "images_per_s")


def recipe(cfg: BenchmarkConfig, name: str, init: str) -> FinetuneConfig:
    """The benchmark's fine-tuning config of ``name`` (its scratch baseline's with ``scratch``)."""
    return replace(cfg.model_finetune(name).recipe(), init=init)  # type: ignore[arg-type]


def validation_finetune(cfg: BenchmarkConfig, name: str, model: Autoencoder, splits: Splits, init: str,
                        out: Path, reuse: bool) -> dict[str, Any]:
    """Fine-tune ``model``'s features with all training labels; the kept epoch's validation score."""
    features = FeatureEncoder(copy.deepcopy(model), copy.deepcopy(cfg.model_features(name)),
                              f"models.{name}.features")
    run_cfg = recipe(cfg, name, init)
    cpu, started = time.process_time(), time.perf_counter()
    result = finetune(features, splits.train, splits.val, run_cfg, out / init,
                      n_classes=splits.train.num_classes, seed=cfg.seed, resume=reuse)
    assert splits.val is not None and splits.val.labels is not None
    accuracy = float((result.classifier.predict(splits.val) == splits.val.labels).float().mean())
    return {"val_accuracy": round(accuracy, 4), "best_epoch": result.best_epoch,
            "epochs": len(result.history), "train_seconds": result.train_seconds,
            "seconds": round(time.perf_counter() - started, 1),
            "cpu_seconds": round(time.process_time() - cpu, 1),
            "history": [{k: row[k] for k in HISTORY if k in row} for row in result.history]}


def main() -> None:
    args, cfg = common.trial_setup(__doc__, "trials/finetune_trial.json", add=lambda p: p.add_argument(
        "--init", choices=["pretrained", "scratch", "both"], default="both"))
    started = time.time()
    inits = ["pretrained", "scratch"] if args.init == "both" else [args.init]
    splits, model, untrained, pretraining = common.preset_model(  # a scratch trial pretrains nothing
        cfg, args.model, args.runs, args.reuse, "finetune_trial", pretrain="pretrained" in inits)
    out = Path(args.runs) / f"{args.model}-finetune"
    runs = {init: validation_finetune(cfg, args.model, model if init == "pretrained" else untrained, splits,
                                      init, out, args.reuse) for init in inits}
    result = {"question": f"{args.model}'s fine-tuning on {args.preset}'s validation split, pretrained vs "
                          "scratch (test never scored)",
              "command": common.command("finetune_trial.py", data=True),
              "model": args.model, "dataset": cfg.datasets[0].name, "train": len(splits.train),
              "val": len(splits.val), **runs, "pretraining": pretraining, "entry": cfg.models[args.model],
              "recipe": {init: to_dict(recipe(cfg, args.model, init)) for init in inits},
              "features": to_dict(cfg.model_features(args.model)),
              "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
              **common.provenance(started, common.SHARED, load_average=True)}
    common.publish(args.out, result, indent=1, default=str)


if __name__ == "__main__":
    main()
