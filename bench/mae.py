"""Masked autoencoder on digits: does learning to fill in hidden patches give a ViT useful features?

Claims checked (issue 35), on scikit-learn's digits (bundled: offline, 8x8 grey, 10 classes):
1. A linear probe on the pretrained encoder's pooled tokens, against the same ViT untrained (its
   twin: same architecture, same seed) and raw pixels; C chosen on the validation split.
2. Fine-tuning the pretrained encoder (layer-wise lr decay) against the same ViT trained from
   scratch with the same schedule (the benchmark's scratch baseline).

    python bench/mae.py                  # 200 pretraining epochs, 30 fine-tuning: ~8 min on one core
    python bench/mae.py --epochs 2 --finetune-epochs 1     # a quick look
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import common
from aevision.config import DataConfig, TrainConfig
from aevision.data import Splits, load_dataset
from aevision.models import build_model
from aevision.tasks.features import FeatureEncoder, extract
from aevision.tasks.finetune import FinetuneConfig, finetune
from aevision.tasks.probe import LinearProbe

# 16 patches of 2x2 on an 8x8 digit: with so few, half are masked (the paper's 0.75 of 196
# patches leaves 49 to see; 0.75 of 16 would leave 4)
MAE = {"name": "mae", "patch_size": 2, "width": 64, "depth": 4, "heads": 4, "decoder_width": 32,
       "decoder_depth": 1, "decoder_heads": 4, "mask_ratio": 0.5}
KEEP = ["epochs", "val_recon", "best_epoch", "train_seconds"]


class Pixels(nn.Module):
    """Raw pixels as features: (N, C, H, W) -> (N, C*H*W)."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(0))  # extract() finds the device from a parameter

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(1)


def probe_accuracy(features: nn.Module, data: Splits) -> float:
    """Linear probe: fitted on train, C chosen on val, test accuracy."""
    train, val, test = data.train, data.val, data.test
    f_train, f_val, f_test = (extract(features, s) for s in (train, val, test))
    probe = LinearProbe().fit(f_train, train.labels, f_val, val.labels)
    return round(float((probe.predict(f_test) == test.labels).float().mean()), 4)


def finetune_accuracy(model: Any, init: str, data: Splits, epochs: int, out: Path, seed: int) -> float:
    cfg = FinetuneConfig(train=TrainConfig(epochs=epochs, batch_size=64, lr=1e-3, optimizer="adamw",
                                           weight_decay=0.05, scheduler="cosine", progress=False),
                         init=init, layer_decay=0.75, encoder_lr_scale=1.0)
    result = finetune(FeatureEncoder(model), data.train, data.val, cfg, out / init,
                      n_classes=10, seed=seed)
    predicted = result.classifier.predict(data.test)
    return round(float((predicted == data.test.labels).float().mean()), 4)


def untrained(seed: int, shape: Any) -> Any:
    """The pretrained model's twin: the same architecture built from the same seed, never trained."""
    torch.manual_seed(seed)
    options = {k: v for k, v in MAE.items() if k != "name"}
    return build_model("mae", shape, options).eval()


def main() -> None:
    p = common.parser(__doc__, "mae.json", runs="runs/bench-mae")
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--finetune-epochs", type=int, default=30)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    started = time.time()
    runs = Path(args.runs)
    data = load_dataset(DataConfig(name="digits"), args.seed)
    config = {"seed": args.seed, "output_dir": str(runs / "mae"), "data": {"name": "digits"}, "model": MAE,
              "train": {"epochs": args.epochs, "batch_size": 64, "optimizer": "adamw", "lr": args.lr,
                        "weight_decay": 0.05, "scheduler": "cosine", "warmup_steps": 50, "progress": False}}
    model, info = common.pretrained(config, data, args.reuse, KEEP)
    shape = data.train.image_shape
    probe = {"mae": probe_accuracy(FeatureEncoder(model), data),
             "untrained_twin": probe_accuracy(FeatureEncoder(untrained(args.seed, shape)), data),
             "pixels": probe_accuracy(Pixels(), data)}
    ft = (data, args.finetune_epochs, runs, args.seed)
    tuned = {"pretrained": finetune_accuracy(model, "pretrained", *ft),
             "scratch": finetune_accuracy(untrained(args.seed, shape), "scratch", *ft)}
    result = {
        "question": "does MAE pretraining beat the same ViT untrained (linear probe) and from scratch "
                    "(fine-tuning)?",
        "command": common.command("mae.py"),
        "linear_probe_test_accuracy": probe,
        "probe_beats_untrained_twin": probe["mae"] > probe["untrained_twin"],
        "finetune_test_accuracy": tuned, "finetune_beats_scratch": tuned["pretrained"] > tuned["scratch"],
        "protocol": {"data": "digits (train / val / test as loaded, seed)", "probe": "LinearProbe, C on val",
                     "finetune": {"epochs": args.finetune_epochs, "layer_decay": 0.75, "lr": 1e-3}},
        "config": config, "pretraining": info,
        **common.provenance(started, common.SHARED, load_average=True),
    }
    common.publish(args.out, result, indent=2)


if __name__ == "__main__":
    main()
