"""The cifar10 benchmark preset: it loads and validates, and runs end to end (tiny overrides) on a
generated train/ + test/ folder, down to the keys bench/classification.py writes for it."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from aevision.benchmark import load_benchmark, run_benchmark
from aevision.benchmark.config import Budget


def test_the_cifar10_preset_loads_and_validates():
    cfg = load_benchmark("cifar10")
    assert cfg.datasets[0].name == "cifar10"  # torchvision's; offline: folder:PATH/cifar10-jpeg
    assert cfg.budgets == [Budget(per_class=25), Budget(per_class=400), Budget()]
    assert set(cfg.baselines) == {"pixels", "pca", "scratch", "untrained"}
    assert {p for p in ("linear", "knn", "finetune") if getattr(cfg.protocols, p).enabled} == {
        "linear", "knn", "finetune"}
    regs = {name: [r["name"] for r in entry.get("regularizers", [])] for name, entry in cfg.models.items()}
    assert ["contractive"] in regs.values()
    rgb = cfg.pretrain_config("conv-rgb", cfg.datasets[0])
    assert rgb.augment.hflip and rgb.augment.zoom > 1 and rgb.model.options["code_dim"] is None
    assert cfg.budgets_for("finetune") == [Budget(per_class=400), Budget()]
    # Coates et al.'s single layer, read through the top-k code it trained with, by quadrant
    patches = cfg.model_features("patches")
    assert (patches.source, patches.pool) == ("code", 2) and "patches" not in cfg.protocols.finetune.models
    # the ViT fine-tunes (the MAE's and its scratch twin's) in bf16, the conv models in fp32
    assert cfg.model_finetune("mae").train.precision == "bf16-mixed"
    assert cfg.model_finetune("conv-rgb").train.precision == "32-true"
    # the residual backbone fine-tunes with its own recipe; every fine-tune is scored with flips
    res = cfg.model_finetune("conv-res")
    assert (res.train.epochs, res.train.optimizer, res.train.batch_size) == (30, "adamw", 128)
    assert res.hidden == [512]  # the protocol's head
    # whole-pixel shifts for the backbone (chosen on validation); the others keep the protocol's
    assert (res.augment.translate, res.augment.shift, res.augment.hflip) == (4, 0.0, True)
    assert cfg.model_finetune("conv-rgb").augment.shift == 0.1
    assert res.tta == cfg.model_finetune("mae").tta == ["hflip"]
    assert cfg.pretrain_config("conv-res", cfg.datasets[0]).model.options["residual"] is True


def _split_folder(root, classes=3, train=30, test=8, size=8):
    """Three classes of RGB JPEGs told apart by colour, in train/ and test/."""
    rng = np.random.default_rng(0)
    for split, n in (("train", train), ("test", test)):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 80, (size, size, 3), dtype=np.uint8)
                pixels[..., c] += 150
                Image.fromarray(pixels).save(folder / f"{i:04d}.jpg", quality=90)
    return root


def test_the_cifar10_preset_runs_on_a_split_folder_and_the_bench_writes_its_keys(tmp_path, bench_script):
    torch.set_num_threads(1)
    root = _split_folder(tmp_path / "cifar")
    tiny = [f"output_dir={tmp_path / 'bench'}", f"datasets=[{{name: 'folder:{root}'}}]",
            "labels=[25, all]", "seeds=2", "protocols.finetune.labels=[all]",
            "protocols.finetune.train.epochs=1", "protocols.knn.enabled=false", "imbalance.ratio=null",
            "confusion_png=false"]
    for model in ("conv-rgb", "conv-res", "conv-contractive"):
        tiny += [f"models.{model}.model.channels=[4, 8]", f"models.{model}.train.epochs=1"]
    tiny += ["models.conv-res.finetune.train.epochs=1"]  # its own recipe's 30
    tiny += ["models.patches.model.features=16", "models.patches.train.epoch_steps=2",
             "models.patches.regularizers=[{name: topk, k: 4, over: channels}]"]
    tiny += ["models.mae.model.width=16", "models.mae.model.depth=1", "models.mae.model.heads=2",
             "models.mae.model.decoder_width=16", "models.mae.model.decoder_depth=1",
             "models.mae.train.epochs=1", "models.mae.train.warmup_steps=0"]
    cfg = load_benchmark("cifar10", tiny)
    board = run_benchmark(cfg, verbose=False, command="test").board
    info = board["datasets"][f"folder:{root}"]
    assert (info["train"] + info["val"], info["test"]) == (90, 24)  # the folder's own test split
    summary = bench_script("classification").summarise("cifar10", board)
    for key in ("linear_probe_all", "pixels_linear_all", "pca_linear_all", "finetune_all",
                "contractive_linear_all", "contractive_finetune_all", "untrained_linear_all"):
        assert 0 <= summary[key] <= 1, key
    assert summary["contractive_model"] == "conv-contractive"
    assert summary["linear_probe_400pc_mean"] is None  # no 400/class budget in this run
    assert 0 <= summary["mae_finetune_all"] <= 1 and 0 <= summary["vit_scratch_finetune_all"] <= 1
    assert summary["mae_model"] == "mae" and "mae_note" not in summary
    assert 0 <= summary["mae_linear_all"] <= 1 and 0 <= summary["mae_untrained_linear_all"] <= 1
    untrained_mae = next(r for r in board["rows"]
                         if r["method"] == "untrained:mae" and r["protocol"] == "linear")
    assert summary["mae_untrained_linear_all"] == untrained_mae["accuracy_mean"]
    assert summary["mae_finetune_400pc"] is None  # not a budget of this run
    untrained = {v["method"]: v for v in board["verdicts"] if v["baseline"].startswith("untrained:")}
    assert set(untrained) == {"conv-rgb", "conv-res", "conv-contractive", "patches", "mae"}
    assert "every_autoencoder_beats_its_untrained_encoder" in summary["targets"]
    assert summary["targets"]["finetune_all"]["target"] == 0.93
    margin = summary["targets"]["mae_finetune_all_beats_vit_scratch_finetune_all"]
    assert margin["met"] == (margin["measured"] >= 5)
