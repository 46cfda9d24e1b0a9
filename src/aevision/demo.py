"""``aevision demo``: the whole promise in under three minutes, offline, on the embedded digits.

Pretrains a few autoencoder variants on the unlabelled training images, then asks the question
users care about: with few labels, do their features beat raw pixels and PCA under the same linear
classifier? Reports every number, whichever method wins, averaged over seeds, on a test split that
nothing was tuned on.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from sklearn.decomposition import PCA

from aevision.api import encode, machine_info, pretrain
from aevision.config import DataConfig, build_config
from aevision.data import Splits, labelled_subset, load_dataset
from aevision.io import write_json, write_text
from aevision.report.plots import loss_curves, reconstruction_grid
from aevision.report.table import markdown_table, print_table
from aevision.tasks.probe import LinearProbe

CODE_DIM = 32
# Each variant is a config fragment; equal code sizes keep the comparison with PCA fair.
VARIANTS: dict[str, dict[str, Any]] = {
    "dense": {"model": {"name": "dense", "code_dim": CODE_DIM}},
    "sparse-l1": {"model": {"name": "dense", "code_dim": CODE_DIM},
                  "regularizers": [{"name": "l1", "weight": 1e-3}]},
    "contractive": {"model": {"name": "dense", "code_dim": CODE_DIM, "code_activation": "sigmoid"},
                    "regularizers": [{"name": "contractive", "weight": 1e-2}]},
    "denoising": {"model": {"name": "dense", "code_dim": CODE_DIM},
                  "regularizers": [{"name": "denoising", "noise": "masking", "p": 0.3}]},
    "conv": {"model": {"name": "conv", "channels": [16, 32], "code_dim": CODE_DIM}},
}
BUDGETS: tuple[int | None, ...] = (5, 20, None)  # labels per class; None = every training label


@dataclass
class DemoResult:
    out_dir: Path
    metrics: dict[str, Any]


def budget_name(b: int | None) -> str:
    return "all" if b is None else f"{b}/class"


def run_demo(out_dir: str | Path = "runs/demo", *, seed: int = 0, epochs: int = 60, seeds: int = 3,
             data_root: str | None = None, verbose: bool = True) -> DemoResult:
    out_dir = Path(out_dir)
    started = time.time()
    say = print if verbose else (lambda *a, **k: None)
    data_cfg = DataConfig(name="digits", root=data_root)
    splits = load_dataset(data_cfg, seed)
    train, test = splits.train, splits.test
    assert test is not None and train.labels is not None and test.labels is not None
    say(f"digits: {len(train)} train / {len(splits.val or [])} val / {len(test)} test images, "
        f"8x8 grey, 10 classes")

    features: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    pixels_train = train.floats().flatten(1)
    pixels_test = test.floats().flatten(1)
    features["pixels"] = (pixels_train, pixels_test)
    pca = PCA(n_components=CODE_DIM, random_state=seed).fit(pixels_train.numpy())
    features[f"pca-{CODE_DIM}"] = (torch.from_numpy(pca.transform(pixels_train.numpy())).float(),
                                   torch.from_numpy(pca.transform(pixels_test.numpy())).float())

    histories: dict[str, list[dict[str, Any]]] = {}
    recons: dict[str, torch.Tensor] = {}
    pretrain_stats: dict[str, Any] = {}
    shown = test.floats(slice(0, 12))
    for name, fragment in VARIANTS.items():
        cfg = build_config(base={
            "seed": seed, "output_dir": str(out_dir / "models" / name),
            "data": {"name": "digits", "root": data_root},
            "train": {"epochs": epochs, "batch_size": 64, "lr": 2e-3, "progress": False},
            **fragment,
        })
        t0 = time.time()
        result = pretrain(cfg, data=splits)
        seconds = time.time() - t0
        model = result.model
        features[name] = (encode(model, train), encode(model, test))
        histories[name] = result.history
        recons[name] = model.reconstruct(shown).detach()
        last = result.history[-1]
        pretrain_stats[name] = {
            "config": cfg.to_dict(), "epochs": len(result.history), "seconds": round(seconds, 2),
            "best_epoch": result.fit.best_epoch, "val_recon": last.get("val_recon"),
            "train_loss": last.get("train_loss"),
        }
        say(f"pretrained {name:<12} {seconds:5.1f}s  val recon {last.get('val_recon', float('nan')):.4f}")

    results: dict[str, dict[str, Any]] = {}
    for method, (f_train, f_test) in features.items():
        results[method] = {}
        for budget in BUDGETS:
            accs = []
            for rep in range(seeds):
                idx = labelled_subset(train.labels, budget, seed + rep)
                probe = LinearProbe(seed=seed + rep).fit(
                    f_train[idx], train.labels[idx], scaler_data=f_train, n_classes=10)
                accs.append(probe.score(f_test, test.labels))
            results[method][budget_name(budget)] = {
                "mean": statistics.fmean(accs),
                "std": statistics.pstdev(accs) if len(accs) > 1 else 0.0,
                "runs": accs,
            }

    header = ["method", *(f"{budget_name(b)} labels" for b in BUDGETS)]
    rows, best_cells = [], []
    for method, per_budget in results.items():
        rows.append([method, *(f"{per_budget[budget_name(b)]['mean']:.3f} ± "
                               f"{per_budget[budget_name(b)]['std']:.3f}" for b in BUDGETS)])
    winners = {}
    for c, b in enumerate(BUDGETS, start=1):
        key = budget_name(b)
        best = max(results, key=lambda m: results[m][key]["mean"])
        winners[key] = best
        best_cells.append((list(results).index(best), c))

    reconstruction_grid(out_dir / "reconstructions.png", shown, recons)
    loss_curves(out_dir / "loss_curves.png", histories)
    metrics = {
        "task": "linear probe test accuracy (mean ± std over seeds) at label budgets",
        "dataset": {"name": "digits", "train": len(train), "val": len(splits.val or []),
                    "test": len(test)},
        "protocol": {"probe": "multinomial logistic regression, standardised features, C chosen "
                              "by stratified CV inside the labelled subset", "seeds": seeds,
                     "budgets_per_class": [budget_name(b) for b in BUDGETS],
                     "code_dim": CODE_DIM, "pca_components": CODE_DIM},
        "seed": seed,
        "results": results,
        "winner_per_budget": winners,
        "pretraining": pretrain_stats,
        "wall_seconds": round(time.time() - started, 2),
        "machine": machine_info(),
    }
    write_json(out_dir / "metrics.json", metrics)
    write_text(out_dir / "summary.md", _summary_markdown(header, rows, winners, metrics))
    if verbose:
        print_table("linear-probe test accuracy on digits (mean ± std over "
                    f"{seeds} seeds)", header, rows, best_cells)
        for key, m in winners.items():
            print(f"best with {key} labels: {m}")
        print(f"wrote {out_dir}/metrics.json, summary.md, reconstructions.png, loss_curves.png "
              f"({metrics['wall_seconds']:.0f}s)")
    return DemoResult(out_dir, metrics)


def _summary_markdown(header: list[str], rows: list[list[Any]], winners: dict[str, str],
                      metrics: dict[str, Any]) -> str:
    lines = ["# aevision demo: autoencoder features vs pixels and PCA on digits\n",
             f"Linear-probe test accuracy, mean ± std over {metrics['protocol']['seeds']} seeds "
             f"(test split never used for any choice).\n",
             markdown_table(header, rows),
             "Best per budget: " + ", ".join(f"{k}: **{v}**" for k, v in winners.items()) + "\n",
             "![reconstructions](reconstructions.png)\n", "![loss curves](loss_curves.png)\n"]
    return "\n".join(lines)


def load_splits(seed: int = 0) -> Splits:
    return load_dataset(DataConfig(name="digits"), seed)
