"""Question: do images decoded from latent mixes of same-class examples help a classifier that has
only 100 labels? (Reported whichever way it goes.)

MNIST. A VAE is pretrained on the unlabelled training images (training split minus a seeded 10%
validation split). For each seed, 100 labelled images (10 per class) are drawn; three training
sets are compared under the same classifier and recipe:

- ``real``: the 100 labelled images;
- ``latent-mix``: plus 100 synthetic images per class, each decoded from
  ``lam * z_a + (1 - lam) * z_b`` for two labelled images a, b of that class (lam ~ U[0.2, 0.8]);
- ``pixel-mix``: plus the same pairs mixed in pixel space with the same lam (a control: is it the
  decoder that helps, or just mixing?).

Classifiers: a linear probe on pixels (logistic regression; its L2 strength chosen by
cross-validation on the 100 real labels only, then fixed for every arm), and a small CNN trained
for a fixed number of steps. Test accuracy on the 10k test images, mean and std over seeds.

    AEVISION_DATA=/work/shared/datasets python bench/augment.py
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # no spinning threads on a shared machine

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import common
from aevision.config import DataConfig
from aevision.data import Splits, labelled_subset, load_dataset
from aevision.data.splits import generator
from aevision.report.plots import image_grid, save_image
from aevision.tasks.augment import latent_mixes
from aevision.tasks.probe import LinearProbe

VAE: dict[str, Any] = {"name": "vae", "hidden": [512], "code_dim": 16, "beta": 1.0, "reconstruction": "bce"}
ARMS = ("real", "latent-mix", "pixel-mix")


def parse_args() -> argparse.Namespace:
    p = common.parser(__doc__, "augment.json", data=True, runs="runs/bench-augment",
                      reuse="load the VAE already trained in --runs")
    p.add_argument("--epochs", type=int, default=10, help="VAE pretraining epochs")
    p.add_argument("--labels-per-class", type=int, default=10)
    p.add_argument("--synthetic-per-class", type=int, default=100)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--cnn-steps", type=int, default=400)
    p.add_argument("--threads", type=int, default=2)
    return p.parse_args()


class SmallCNN(nn.Module):
    """Two conv blocks and a hidden layer: (N, 1, 28, 28) -> (N, 10) logits."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Dropout(0.3), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def train_cnn(x: Tensor, y: Tensor, steps: int, seed: int, batch: int = 64) -> SmallCNN:
    """The same recipe for every arm: ``steps`` Adam steps on shuffled minibatches."""
    torch.manual_seed(seed)
    model = SmallCNN()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=5e-4)
    g = generator(seed, 71)
    model.train()
    done = 0
    while done < steps:
        for idx in torch.randperm(len(x), generator=g).split(batch):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
            if done == steps:
                break
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    pred = torch.cat([model(chunk).argmax(1) for chunk in x.split(2000)])
    return float((pred == y).float().mean())


def pretrain_vae(args: argparse.Namespace, splits: Splits) -> tuple[Any, dict]:
    """The VAE the latent mixes are decoded with, and how it was trained."""
    config = {"seed": 0, "output_dir": str(Path(args.runs) / "vae"), "model": VAE,
              "data": {"name": "mnist", "root": args.data_root},
              "train": {"epochs": args.epochs, "batch_size": 128, "lr": 1e-3, "progress": False}}
    return common.pretrained(config, splits, args.reuse, ("config", "seconds", "last_epoch"))


def training_sets(vae: Any, x_real: Tensor, y_real: Tensor, args: argparse.Namespace, seed: int
                  ) -> dict[str, tuple[Tensor, Tensor]]:
    """Each arm's training images and labels; seed 0 also draws examples of the latent mixes."""
    mixed = latent_mixes(vae, x_real, y_real, args.synthetic_per_class, seed=seed)
    lam = mixed.lam.view(-1, 1, 1, 1)
    pixel_mix = lam * x_real[mixed.pairs[:, 0]] + (1 - lam) * x_real[mixed.pairs[:, 1]]
    if seed == 0:
        rows = [x_real[y_real == c][:2] for c in range(10)]
        shown = [torch.cat([r, mixed.images[mixed.labels == c][:6]]) for c, r in enumerate(rows)]
        save_image(common.RESULTS / "augment_examples.png", image_grid(shown, scale=2))
    return {"real": (x_real, y_real),
            "latent-mix": (torch.cat([x_real, mixed.images]), torch.cat([y_real, mixed.labels])),
            "pixel-mix": (torch.cat([x_real, pixel_mix]), torch.cat([y_real, mixed.labels]))}


def run_seeds(vae: Any, splits: Splits, args: argparse.Namespace) -> dict[str, dict[str, list[float]]]:
    """Test accuracy of each classifier on each arm, one value per seed."""
    train, test = splits.train, splits.test
    assert test is not None and train.labels is not None and test.labels is not None
    x_test, y_test = test.floats(), test.labels
    runs: dict[str, dict[str, list[float]]] = {c: {a: [] for a in ARMS} for c in ("linear-pixels", "cnn")}
    for seed in range(args.seeds):
        idx = labelled_subset(train.labels, args.labels_per_class, seed)
        x_real, y_real = train.floats(idx), train.labels[idx]
        sets = training_sets(vae, x_real, y_real, args, seed)
        # the probe's L2 strength: chosen by CV on the real labels only, then fixed for every arm
        c_real = LinearProbe(seed=seed).fit(x_real.flatten(1), y_real, n_classes=10).c_
        for arm, (x, y) in sets.items():
            probe = LinearProbe(c_grid=(c_real,), seed=seed).fit(x.flatten(1), y, n_classes=10)
            runs["linear-pixels"][arm].append(probe.score(x_test.flatten(1), y_test))
            runs["cnn"][arm].append(accuracy(train_cnn(x, y, args.cnn_steps, seed), x_test, y_test))
        print(f"seed {seed}: " + "; ".join(f"{c} " + ", ".join(f"{a} {v[-1]:.4f}" for a, v in r.items())
                                           for c, r in runs.items()), file=sys.stderr, flush=True)
    return runs


def report(args: argparse.Namespace, runs: dict[str, dict[str, list[float]]], pretraining: dict,
           started: float) -> dict[str, Any]:
    """Each arm's mean and std, and whether the latent mixes help (on average and in most seeds)."""
    results = {c: {a: common.mean_std(v) for a, v in r.items()} for c, r in runs.items()}
    gains = {c: {a: round(results[c][a]["mean"] - results[c]["real"]["mean"], 4)
                 for a in ARMS if a != "real"} for c in results}
    wins = {c: sum(lm > r for lm, r in zip(runs[c]["latent-mix"], runs[c]["real"], strict=True))
            for c in runs}
    return {
        "question": "do latent same-class mixes help a classifier trained on 100 labels?",
        "command": common.command("augment.py", data=True),
        "test_accuracy": results,
        "gain_over_real": gains,
        "latent_mix_beats_real_in_seeds": {c: f"{w}/{args.seeds}" for c, w in wins.items()},
        "helps": {c: gains[c]["latent-mix"] > 0 and wins[c] > args.seeds / 2 for c in gains},
        "protocol": {
            "labels": f"{args.labels_per_class} per class from the training split (seeded)",
            "synthetic": f"{args.synthetic_per_class} per class, decoded latent mixes of two labelled "
                         "images of the class, lam ~ U[0.2, 0.8]; pixel-mix uses the same pairs and lam",
            "test": "10k MNIST test images", "seeds": args.seeds,
        },
        "config": {"vae": VAE, "epochs": args.epochs, "cnn_steps": args.cnn_steps,
                   "cnn": "conv32-pool-conv64-pool-fc128, dropout 0.3, Adam 1e-3, wd 5e-4, batch 64",
                   "threads": args.threads},
        "pretraining": pretraining,
        **common.provenance(started, common.SHARED, load_average=True),
    }


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    started = time.time()
    splits = load_dataset(DataConfig(name="mnist", root=args.data_root), 0)
    vae, pretraining = pretrain_vae(args, splits)
    runs = run_seeds(vae, splits, args)
    common.publish(args.out, report(args, runs, pretraining, started), indent=2)


if __name__ == "__main__":
    main()
