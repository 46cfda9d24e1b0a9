"""The untrained control: every autoencoder's own encoder with random weights, under the same
features and probe, in the leaderboard and its verdicts."""

from __future__ import annotations

from pathlib import Path

import torch

from aevision.benchmark import load_benchmark, run_benchmark
from aevision.benchmark.config import PRESETS
from aevision.benchmark.runner import DatasetRun
from aevision.models import load_model

TINY = ["models={tiny: {model: {name: conv, channels: [4], code_dim: null}, train: {epochs: 1, "
        "batch_size: 64}, features: {source: stages, pool: 2}}}",
        "baselines=[pixels, untrained]", "labels=[5]", "seeds=2", "protocols.finetune.enabled=false",
        "protocols.finetune.models=null", "imbalance.models=null", "imbalance.ratio=null",
        "confusion_png=false"]


def test_every_autoencoder_is_compared_with_its_untrained_encoder(tmp_path):
    torch.set_num_threads(1)
    cfg = load_benchmark("quick", [f"output_dir={tmp_path}", *TINY])
    board = run_benchmark(cfg, verbose=False).board
    methods = board["datasets"]["digits"]["methods"]
    assert methods["tiny"]["untrained_control"] == "untrained:tiny"
    control = methods["untrained:tiny"]
    assert control["kind"] == "control" and control["dim"] == methods["tiny"]["dim"] == 4 * 2 * 2
    assert control["config"]["features"] == {"source": "stages", "stages": None, "pool": 2, "pool_op": "avg"}
    runs = {(r["protocol"], r["seed"]) for r in board["records"] if r["method"] == "untrained:tiny"}
    assert runs == {("linear", 0), ("linear", 1), ("knn", 0), ("knn", 1)}
    ver = [v for v in board["verdicts"] if v["method"] == "tiny"]
    assert [v["baseline"] for v in ver] == ["pixels", "untrained:tiny"]
    assert ver[1]["n_seeds"] == 2 and ver[1]["verdict"] in ("wins", "loses", "within noise")
    md = (Path(tmp_path) / "leaderboard.md").read_text()
    assert "| tiny | untrained:tiny | 5/class |" in md and "what pretraining itself adds" in md

    # the control is the very architecture with random weights, not the trained ones
    run = DatasetRun(cfg, cfg.datasets[0], Path(tmp_path), lambda _s: None)
    run.methods["tiny"] = {}
    untrained = run._untrained("tiny").stats["features"].encoder.state_dict()
    trained = load_model(cfg.pretrain_config("tiny", cfg.datasets[0]).output_dir).encoder.state_dict()
    assert untrained.keys() == trained.keys()
    assert not all(torch.equal(untrained[k], trained[k]) for k in trained)


def test_every_preset_has_the_untrained_control():
    for name in PRESETS:
        assert "untrained" in load_benchmark(name).baselines, name


def test_the_control_holds_the_weights_pretraining_started_from(tmp_path):
    """With a vanishing learning rate pretraining leaves its start unchanged: the control equals it."""
    torch.set_num_threads(1)
    cfg = load_benchmark("quick", [
        f"output_dir={tmp_path}", "baselines=[untrained]", "protocols.finetune.models=null",
        "imbalance.models=null", "imbalance.ratio=null",
        "models={tiny: {model: {name: conv, channels: [4], code_dim: null}, "
        "train: {epochs: 1, lr: 1.0e-30, optimizer: sgd}}}"])
    run = DatasetRun(cfg, cfg.datasets[0], Path(tmp_path), lambda _s: None)
    trained = run._pretrained("tiny").stats["features"].encoder.state_dict()
    untrained = run._untrained("tiny").stats["features"].encoder.state_dict()
    assert all(torch.equal(trained[k], untrained[k]) for k in trained)


def test_models_that_differ_only_in_a_penalty_share_one_control(tmp_path):
    """A penalty or a corruption changes training, not what the untrained encoder computes: such
    models are compared with one control, probed once; a code transform (top-k) is part of the
    encoder, so its model gets a control of its own."""
    torch.set_num_threads(1)
    arch = "model: {name: conv, channels: [4], code_dim: 16}, train: {epochs: 1, batch_size: 64}"
    cfg = load_benchmark("quick", [
        f"output_dir={tmp_path}", "baselines=[untrained]", "labels=[5]", "seeds=1",
        "protocols.finetune.enabled=false", "protocols.finetune.models=null", "imbalance.models=null",
        "imbalance.ratio=null", "confusion_png=false",
        f"models={{plain: {{{arch}}}, contractive: {{{arch}, regularizers: [{{name: contractive}}]}}, "
        f"topk: {{{arch}, regularizers: [{{name: topk, k: 4}}]}}}}"])
    board = run_benchmark(cfg, verbose=False).board
    methods = board["datasets"]["digits"]["methods"]
    assert methods["plain"]["untrained_control"] == "untrained:plain"
    assert methods["contractive"]["untrained_control"] == "untrained:plain"
    assert methods["topk"]["untrained_control"] == "untrained:topk"
    assert methods["untrained:plain"]["control_of"] == ["plain", "contractive"]
    assert "untrained:contractive" not in methods
    probed = sorted({r["method"] for r in board["records"] if r["method"].startswith("untrained:")})
    assert probed == ["untrained:plain", "untrained:topk"]
    shared = [v for v in board["verdicts"]
              if v["method"] == "contractive" and v["baseline"].startswith("untrained")]
    assert [v["baseline"] for v in shared] == ["untrained:plain"]
