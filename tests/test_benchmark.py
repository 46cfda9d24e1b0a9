"""``aevision benchmark``: config and budgets, imbalance, no test leakage, and ``quick`` end to end."""

from __future__ import annotations

import csv
import inspect
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from aevision.benchmark import load_benchmark, parse_budget, parse_budgets, run_benchmark
from aevision.benchmark import protocols as protocols_module
from aevision.benchmark.config import Budget
from aevision.benchmark.runner import DatasetRun
from aevision.cli import main
from aevision.data.splits import labelled_subset, long_tailed_subset
from aevision.errors import AevisionError, ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")  # small models: a second thread only waits


def test_label_budgets_parse_per_class_total_and_all():
    assert parse_budget(10) == Budget(per_class=10)
    assert parse_budget("100") == Budget(per_class=100)
    assert parse_budget("1000t") == parse_budget("1000 total") == Budget(total=1000)
    assert parse_budget("all").is_all
    assert [b.name for b in parse_budgets("10,100t,all,10")] == ["10/class", "100 total", "all"]
    for bad in ("0", "ten", "-3", True, "10x"):
        with pytest.raises(ConfigError, match="labels"):
            parse_budget(bad)


def test_label_subsets_are_class_balanced_and_seed_deterministic():
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate([50, 31, 77, 40])])
    labels = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(1))]
    for per_class, total in ((7, None), (None, 22)):
        a = labelled_subset(labels, per_class, 3, total)
        assert torch.equal(a, labelled_subset(labels, per_class, 3, total))
        assert not torch.equal(a, labelled_subset(labels, per_class, 4, total))
        counts = torch.bincount(labels[a], minlength=4)
        if per_class:
            assert counts.tolist() == [7] * 4
        else:
            assert counts.sum() == 22 and counts.max() - counts.min() <= 1


def test_long_tailed_subset_follows_the_exponential_profile():
    labels = torch.arange(10).repeat_interleave(200)
    idx = long_tailed_subset(labels, 100, seed=0)
    counts = torch.bincount(labels[idx], minlength=10).tolist()
    assert counts[0] == 200 and counts[-1] == 2  # largest / smallest = 100
    assert counts == sorted(counts, reverse=True)
    assert counts[5] == round(200 * 100 ** (-5 / 9))
    assert torch.equal(idx, long_tailed_subset(labels, 100, seed=0))
    assert not torch.equal(idx, long_tailed_subset(labels, 100, seed=1))
    with pytest.raises(AevisionError, match="imbalance ratio"):
        long_tailed_subset(labels, 0.5, seed=0)


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"protocols\.knn\.kk"):
        load_benchmark("quick", ["protocols.knn.kk=3"])
    with pytest.raises(ConfigError, match="labels"):
        load_benchmark("quick", ["labels=[10,lots]"])
    with pytest.raises(ConfigError, match="baselines"):
        load_benchmark("quick", ["baselines=[pixels,sift]"])
    with pytest.raises(ConfigError, match=r"models\.conv\.model\.chanels"):
        load_benchmark("quick", ["models.conv.model.chanels=[4]"])
    with pytest.raises(ConfigError, match=r"imbalance\.models"):
        load_benchmark("quick", ["imbalance.models=[nope]"])
    with pytest.raises(AevisionError, match="not a file and not a preset"):
        load_benchmark("no-such-preset")
    # each section's own validate names the full path (a model's pretrain config included)
    for override in ("models.conv.train.epochs=0", "protocols.finetune.min_epoch_images=-1",
                     "protocols.finetune.loss.focal_gamma=-1", "imbalance.seeds=0"):
        field = override.split("=")[0].replace(".", r"\.")
        with pytest.raises(ConfigError, match=rf"^{field}: got"):
            load_benchmark("quick", [override])
    cfg = load_benchmark("quick", ["protocols.finetune.train.epochs=3"])
    assert cfg.protocols.finetune.train.epochs == 3
    assert cfg.protocols.finetune.train.optimizer == "adamw"  # other fine-tuning defaults kept
    for preset in ("mnist", "fashion-mnist"):
        assert load_benchmark(preset).datasets[0].name == preset


def test_a_model_set_to_null_is_left_out_everywhere():
    full = load_benchmark("cifar10")
    cfg = load_benchmark("cifar10", ["models.mae=null"])
    assert list(cfg.models) == [m for m in full.models if m != "mae"]
    assert "mae" in full.protocols.finetune.models and "mae" not in cfg.protocols.finetune.models
    assert cfg.models["conv-rgb"] == full.models["conv-rgb"]  # the others untouched
    with pytest.raises(ConfigError, match=r"protocols\.finetune\.models\[0\]"):  # a typo stays an error
        load_benchmark("cifar10", ["models.mae=null", "protocols.finetune.models=[conv-rbg]"])
    # a misspelt model to leave out: refused (it ran the full benchmark, the model kept)
    with pytest.raises(AevisionError, match=r"^models\.mea=null: no model 'mea' to leave out \(models: "):
        load_benchmark("cifar10", ["models.mea=null"])


def test_protocols_never_receive_test_labels():
    for fn in (protocols_module.linear, protocols_module.knn, protocols_module.finetune_protocol):
        params = inspect.signature(fn).parameters
        assert not any("test_label" in p or p == "y_test" for p in params)
        assert any(p.startswith("test_") for p in params)  # features or images, no labels


def _pixels_only(tmp_path, name):
    return load_benchmark("quick", [
        f"output_dir={tmp_path / name}", "models={}", "baselines=[pixels,pca]", "labels=[5,all]",
        "seeds=2", "protocols.finetune.enabled=false", "protocols.finetune.models=null",
        "imbalance.ratio=null",
        "confusion_png=false"])


def test_choices_do_not_depend_on_test_labels(tmp_path, monkeypatch):
    """Scramble the test labels: every C the probe picks must stay the same (a leak would move it),
    while the scores, computed from those labels, change."""
    honest = run_benchmark(_pixels_only(tmp_path, "a"), verbose=False)
    load = DatasetRun._load

    def scrambled(self):
        splits = load(self)
        g = torch.Generator().manual_seed(123)
        splits.test.labels = splits.test.labels[torch.randperm(len(splits.test), generator=g)]
        return splits

    monkeypatch.setattr(DatasetRun, "_load", scrambled)
    leaked = run_benchmark(_pixels_only(tmp_path, "b"), verbose=False)
    pick = [(r["method"], r["budget"], r["seed"], r["selection"]["C"]) for r in honest.records
            if r["protocol"] == "linear"]
    assert pick == [(r["method"], r["budget"], r["seed"], r["selection"]["C"]) for r in leaked.records
                    if r["protocol"] == "linear"]
    assert len(pick) == 2 * 3  # pixels + pca-32, 5/class x 2 seeds + all x 1
    # PCA's probe keeps the components' variances (a projection, not a whitening)
    assert honest.board["datasets"]["digits"]["methods"]["pca-32"]["config"]["standardize"] == "global"
    assert all(r["accuracy"] > 0.6 for r in honest.records)
    assert all(r["accuracy"] < 0.3 for r in leaked.records)  # scored against scrambled labels


def test_benchmark_quick_end_to_end(tmp_path, capsys):
    out = tmp_path / "quick"
    args = ["benchmark", "quick", "protocols.finetune.train.epochs=1", "imbalance.seeds=1",
            "--labels", "5,all", "--seeds", "2", "--epochs", "1", "--imbalance", "5",
            "-o", str(out)]
    assert main(args) == 0
    board = json.loads((out / "leaderboard.json").read_text())
    models = ["dense", "sparse-l1", "contractive", "denoising", "conv"]
    methods = {r["method"] for r in board["rows"]}
    # sparse-l1 and denoising are dense plus a penalty or a corruption: dense's control is theirs
    controls = {"untrained:dense", "untrained:contractive", "untrained:conv"}
    assert methods == {*models, "pixels", "pca-32", "scratch:conv", *controls}
    info = board["datasets"]["digits"]["methods"]
    assert [info[m]["untrained_control"] for m in models] == [
        "untrained:dense", "untrained:dense", "untrained:contractive", "untrained:dense", "untrained:conv"]
    rows = {(r["method"], r["protocol"], r["budget"], r["loss"]): r for r in board["rows"]}
    for m in [*models, "pixels", "pca-32"]:
        assert rows[(m, "linear", "5/class", None)]["n_seeds"] == 2
        assert rows[(m, "linear", "all", None)]["n_seeds"] == 1  # deterministic with every label
        assert rows[(m, "knn", "5/class", None)]["accuracy_mean"] > 0.2
    for m in ["conv", "scratch:conv"]:  # the preset fine-tunes the conv model only
        assert rows[(m, "finetune", "all", None)]["n_seeds"] == 2
    assert ("pixels", "finetune", "all", None) not in rows
    assert ("dense", "finetune", "all", None) not in rows
    # imbalance: plain vs weighted for the conv model, linear and fine-tune
    imb = [r for r in board["rows"] if r["imbalance"] == 5]
    assert {(r["protocol"], r["loss"]) for r in imb} == {
        ("linear", "plain"), ("linear", "weighted:inverse"), ("finetune", "plain"),
        ("finetune", "weighted:inverse")}
    assert all(r["method"] == "conv" for r in imb)
    # every number with its config, seed, wall time and images/s
    rec = board["records"][0]
    assert {"config", "seed", "wall_seconds", "images_per_s", "confusion_matrix", "per_class"} <= set(rec)
    assert rec["config"]["method"]["pretrain"]["model"]["name"] == "dense"
    with open(out / "leaderboard.csv", newline="") as f:
        lines = list(csv.DictReader(f))
    assert len(lines) == len(board["records"]) and json.loads(lines[0]["config"])
    md = (out / "leaderboard.md").read_text()
    assert "linear probe" in md and "balanced test accuracy" in md and "Pretraining" in md
    # the validation score that ranks the models is shown beside the test accuracies
    for m in ["conv", "scratch:conv"]:
        val = rows[(m, "finetune", "all", None)]["val_score_mean"]
        assert 0 < val <= 1
        assert f"{val:.4f}" in md
    assert rows[("conv", "knn", "all", None)]["val_score_mean"] is None  # kNN chooses nothing
    assert md.count("| validation (all) |") == 2  # linear probe and fine-tuning, not kNN
    assert len(board["verdicts"]) == 5 * 2 * 3  # models x budgets x (pixels, pca, untrained)
    for name in ("accuracy_vs_labels_linear.png", "accuracy_vs_labels_knn.png",
                 "accuracy_vs_labels_finetune.png", "reconstructions.png", "loss_curves.png"):
        assert (out / "digits" / name).read_bytes()[:4] == b"\x89PNG"
    assert (out / "digits" / "confusion" / "conv__linear__all.png").is_file()
    assert json.loads((out / "digits" / "confusion" / "conv__linear__all.json").read_text())["matrix"]
    printed = capsys.readouterr().out
    assert "digits: linear probe" in printed and "pca-32" in printed
    # a second run reuses the pretrained encoders instead of training them again
    assert main(["benchmark", "quick", "protocols.finetune.enabled=false", "imbalance.ratio=null",
                 "--labels", "all", "--seeds", "1", "--epochs", "1", "-o", str(out)]) == 0
    assert "reusing pretrained conv" in capsys.readouterr().out


def test_a_features_section_the_architecture_cannot_give_is_refused_before_any_pretraining(tmp_path, capsys):
    # dense pretrains first in the quick preset; the conv's 16-number code is flat: nothing to pool
    out = tmp_path / "quick"
    args = ["benchmark", "quick", "models.conv.model.code_dim=16",
            "models.conv.features={source: code, pool: 2}", "--epochs", "1", "-o", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "models.conv.features.pool" in err and "flat" in err and len(err.splitlines()) == 1
    assert not list(out.rglob("*.safetensors"))  # no model was trained


def test_cli_errors_are_one_line_with_status_2(tmp_path, capsys):
    assert main(["benchmark", str(tmp_path / "missing.yaml")]) == 2
    assert main(["benchmark", "quick", "--labels", "10,zero"]) == 2
    assert main(["benchmark", "quick", "seeds"]) == 2
    assert main(["benchmark", "quick", "--models", "conv"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(line.startswith("aevision: error: ") for line in err)
    assert "labels[1]" in err[1] and "KEY=VALUE" in err[2]


def test_each_fine_tuned_model_names_the_scratch_baseline_of_its_own_architecture(tmp_path):
    conv = {"model": {"name": "conv", "channels": [8, 16], "code_dim": 16},
            "train": {"epochs": 1, "batch_size": 64}}
    models = {"conv": conv, "conv-l1": {**conv, "regularizers": [{"name": "l1", "weight": 1e-3}]},
              "conv-wide": {**conv, "model": {**conv["model"], "channels": [16, 16]}}}
    cfg = load_benchmark("quick", [
        f"output_dir={tmp_path}", f"models={json.dumps(models)}", "baselines=[scratch]",
        "labels=[all]", "seeds=1", "protocols.linear.enabled=false", "protocols.knn.enabled=false",
        "protocols.finetune.models=null", "protocols.finetune.labels=[all]",
        "protocols.finetune.train.epochs=1", "imbalance.ratio=null", "confusion_png=false"])
    board = run_benchmark(cfg, verbose=False).board
    methods = board["datasets"]["digits"]["methods"]
    # conv-l1 shares conv's network (a regularizer is not architecture): one baseline for both
    assert {m for m in methods if m.startswith("scratch:")} == {"scratch:conv", "scratch:conv-wide"}
    assert {m: methods[m]["scratch_baseline"] for m in models} == {
        "conv": "scratch:conv", "conv-l1": "scratch:conv", "conv-wide": "scratch:conv-wide"}
    finetuned = {r["method"] for r in board["rows"] if r["protocol"] == "finetune"}
    assert finetuned == {*models, "scratch:conv", "scratch:conv-wide"}


def test_a_models_own_finetune_section_is_its_recipe_and_its_scratch_baselines(tmp_path):
    conv = {"model": {"name": "conv", "channels": [8, 16], "code_dim": 16}, "train": {"epochs": 1}}
    vit = {"model": {"name": "mae", "patch_size": 2, "width": 16, "depth": 2, "heads": 2,
                     "decoder_width": 8, "decoder_depth": 1, "decoder_heads": 2, "mask_ratio": 0.5},
           "train": {"epochs": 1}, "features": {"source": "code"},
           "finetune": {"layer_decay": 0.5, "train": {"warmup_steps": 3}}}
    cfg = load_benchmark("quick", [
        f"output_dir={tmp_path}", f"models={json.dumps({'conv': conv, 'vit': vit})}",
        "baselines=[scratch]", "labels=[all]", "seeds=1", "protocols.linear.enabled=false",
        "protocols.knn.enabled=false", "protocols.finetune.models=null", "protocols.finetune.labels=[all]",
        "protocols.finetune.train.epochs=1", "imbalance.ratio=null", "confusion_png=false"])
    assert cfg.model_finetune("conv") is cfg.protocols.finetune
    board = run_benchmark(cfg, verbose=False).board
    ran = {r["method"]: r["config"]["protocol"] for r in board["records"]}
    assert set(ran) == {"conv", "vit", "scratch:conv", "scratch:vit"}
    # the vit's recipe, merged over the protocol's (its epochs, the protocol's; the rest its own)
    assert (ran["vit"]["layer_decay"], ran["vit"]["train"]["warmup_steps"], ran["vit"]["train"]["epochs"]
            ) == (0.5, 3, 1)
    # its scratch baseline: the same recipe from random weights
    assert (ran["scratch:vit"]["init"], ran["scratch:vit"]["layer_decay"],
            ran["scratch:vit"]["train"]["warmup_steps"]) == ("scratch", 0.5, 3)
    assert (ran["conv"]["layer_decay"], ran["conv"]["train"]["warmup_steps"]) == (None, 0)
    assert board["datasets"]["digits"]["methods"]["scratch:vit"]["config"]["finetune"] == vit["finetune"]


def test_fine_tunes_at_all_labels_run_all_seeds_times_and_more_seeds_read_back_the_first(tmp_path):
    def records(seeds: int) -> list[dict]:
        conv = "{model: {name: conv, channels: [8, 16], code_dim: 16}, train: {epochs: 1}}"
        cfg = load_benchmark("quick", [
            f"output_dir={tmp_path}", f"models={{conv: {conv}}}", "baselines=[scratch]", "labels=[5, all]",
            "protocols.linear.enabled=false", "protocols.knn.enabled=false", "protocols.finetune.labels=null",
            "protocols.finetune.train.epochs=1", f"protocols.finetune.seeds={seeds}",
            "protocols.finetune.all_seeds=1", "imbalance.ratio=null", "confusion_png=false",
            "reuse_runs=true"])
        return run_benchmark(cfg, verbose=False).board["records"]

    first = records(1)
    assert sorted((r["method"], r["budget"], r["seed"]) for r in first) == [
        ("conv", "5/class", 0), ("conv", "all", 0),
        ("scratch:conv", "5/class", 0), ("scratch:conv", "all", 0)]
    again = records(2)  # one more seed at 5/class: the runs of the first are read back
    assert sorted((r["budget"], r["seed"], r["reused"]) for r in again if r["method"] == "conv") == [
        ("5/class", 0, True), ("5/class", 1, False), ("all", 0, True)]


def test_outcomes_stored_under_a_key_with_the_protocols_scope_are_read_back_reading_the_folder_once(
        tmp_path, monkeypatch):
    from aevision.benchmark import runner as runner_module
    from aevision.engine.run import digest

    cfg = load_benchmark("quick", [
        f"output_dir={tmp_path}", "models={conv: {model: {name: conv, channels: [8, 16], code_dim: 16}, "
        "train: {epochs: 1}}}", "baselines=[pixels]", "labels=[5, all]",
        "protocols.finetune.enabled=false", "imbalance.ratio=null", "confusion_png=false", "reuse_runs=true"])
    first = run_benchmark(cfg, verbose=False).board["records"]
    folder = tmp_path / "digits" / "outcomes" / "pixels"
    for path in sorted(folder.glob("*.json")):  # as an older aevision stored them: scope in the key
        stored = json.loads(path.read_text())
        stored["inputs"]["config"]["protocol_config"] |= {"seeds": 3, "labels": ["5/class", "all"]}
        path.unlink()
        (folder / f"{digest(stored['inputs'])}.json").write_text(json.dumps(stored))
    reads: list[str] = []
    real = runner_module.read_json
    monkeypatch.setattr(runner_module, "read_json", lambda p, what: reads.append(p) or real(p, what))
    again = run_benchmark(cfg, verbose=False).board["records"]
    assert len(again) == len(first) > 4 and all(r["reused"] for r in again)
    # the folder indexed once, then each file read once more as the run it stores
    assert sorted(p for p in reads if p.parent == folder) == sorted(2 * list(folder.glob("*.json")))


@pytest.mark.parametrize("section, field", [
    ("{labels: [all]}", r"models\.conv\.finetune\.labels"),
    ("{layer_decay: 2}", r"models\.conv\.finetune\.layer_decay"),
    ("{train: {epochz: 2}}", r"models\.conv\.finetune\.train\.epochz"),
    ("[0.5]", r"models\.conv\.finetune")])
def test_a_models_finetune_section_is_checked_before_anything_runs(section, field):
    with pytest.raises(ConfigError, match=field):
        load_benchmark("quick", [f"models.conv.finetune={section}"])


def test_layer_decay_on_an_encoder_without_numbered_layers_is_refused_before_pretraining():
    # its own section: the conv is fine-tuned (quick: protocols.finetune.models=[conv])
    with pytest.raises(ConfigError, match=r"models\.conv\.finetune\.layer_decay.*numbered layers \(mae\)"):
        load_benchmark("quick", ["models.conv.finetune={layer_decay: 0.75}"])
    # the protocol's, for a model only the imbalance study fine-tunes
    with pytest.raises(ConfigError, match=r"protocols\.finetune\.layer_decay.*'conv' \(conv\)"):
        load_benchmark("quick", ["protocols.finetune.layer_decay=0.75", "protocols.finetune.models=[dense]",
                                 "models.dense={model: {name: mae, patch_size: 2}}"])
    # nothing fine-tunes the conv: no objection; an own min_epoch_images is a recipe option
    cfg = load_benchmark("quick", ["protocols.finetune.layer_decay=0.75", "protocols.finetune.models=[dense]",
                                   "models.dense={model: {name: mae, patch_size: 2}, "
                                   "finetune: {min_epoch_images: 900}}", "imbalance.ratio=null"])
    assert (cfg.model_finetune("dense").min_epoch_images, cfg.model_finetune("conv").min_epoch_images
            ) == (900, 500)


def test_resume_reads_back_finished_runs_and_reruns_only_what_changed(tmp_path, capsys):
    config = ["benchmark", "quick", "models={conv: {model: {name: conv, channels: [8, 16], code_dim: 16}}}",
              "baselines=[pixels,scratch]", "protocols.finetune.train.epochs=1",
              "protocols.finetune.labels=[all]", "imbalance.seeds=1", "confusion_png=false"]
    flags = ["--labels", "5,all", "--seeds", "2", "--epochs", "1", "--imbalance", "5", "-o", str(tmp_path),
             "--resume"]
    assert main([*config, *flags]) == 0
    first = json.loads((tmp_path / "leaderboard.json").read_text())["records"]
    assert not any(r["reused"] for r in first)
    assert main([*config, "protocols.knn.k=5", *flags]) == 0  # a changed protocol runs again, nothing else
    second = json.loads((tmp_path / "leaderboard.json").read_text())["records"]
    assert "reused)" in capsys.readouterr().out
    assert len(second) == len(first)
    key = ("method", "protocol", "budget", "seed", "imbalance", "loss")
    before = {tuple(r[k] for k in key): r for r in first}
    for r in second:
        old = before[tuple(r[k] for k in key)]
        assert r["reused"] == (r["protocol"] != "knn"), (r["method"], r["protocol"])
        if r["reused"]:  # the stored predictions, scored again: the same numbers
            assert (r["accuracy"], r["confusion_matrix"], r["selection"]) == (
                old["accuracy"], old["confusion_matrix"], old["selection"])
    assert {r["protocol"] for r in second if r["imbalance"]} == {"linear", "finetune"}
    knn_runs = sum(r["protocol"] == "knn" for r in second)  # stored for k=20 and for k=5
    stored = [p for p in (tmp_path / "digits" / "outcomes").rglob("*.json") if p.parent.name != "pretraining"]
    assert len(stored) == len(second) + knn_runs  # and conv's pretraining record beside them
    reused = sum(r["reused"] for r in second)
    assert f"{reused} of {len(second)} runs were read back" in (tmp_path / "leaderboard.md").read_text()
    # a damaged stored run is run again, not fatal
    damaged = next((tmp_path / "digits" / "outcomes" / "pixels").glob("*.json"))
    damaged.write_text("{not json")
    assert main([*config, "protocols.knn.k=5", *flags]) == 0
    assert "not valid JSON" in capsys.readouterr().out and json.loads(damaged.read_text())["pred"]
    # other weights under the same config (e.g. pretrained again on a nondeterministic GPU)
    # invalidate every run of that model, and only those
    weights = tmp_path / "models" / "digits" / "conv" / "model.safetensors"
    tensors = load_file(weights)
    save_file({k: v + 0.01 if v.is_floating_point() else v for k, v in tensors.items()}, weights)
    assert main([*config, "protocols.knn.k=5", *flags]) == 0
    third = json.loads((tmp_path / "leaderboard.json").read_text())["records"]
    assert {r["method"] for r in third if not r["reused"]} == {"conv"}


def test_a_stored_outcomes_folder_carries_a_benchmark_to_a_machine_without_the_trained_models(tmp_path):
    """outcomes_dir kept, output_dir lost: every stored run is read back and nothing is pretrained;
    a run the folder lacks pretrains its model again, and when that gives other weights every run
    of that model runs again on them (no model's rows mix two pretrainings)."""
    import shutil

    from aevision.engine.run import digest

    out, kept = tmp_path / "runs", tmp_path / "kept"

    def board(seeds: int = 1, *, same_machine: bool = False) -> dict:
        if not same_machine:  # another machine: the stored folder only
            shutil.rmtree(out, ignore_errors=True)
        cfg = load_benchmark("quick", [
            f"output_dir={out}", f"outcomes_dir={kept}",
            "models={conv: {model: {name: conv, channels: [8, 16], code_dim: 16}, train: {epochs: 1}}}",
            "baselines=[pixels, untrained]", "labels=[5, all]", "protocols.finetune.labels=[5]",
            "protocols.finetune.train.epochs=1", f"seeds={seeds}", "protocols.finetune.seeds=1",
            "imbalance.ratio=null", "confusion_png=false", "reuse_runs=true"])
        return run_benchmark(cfg, verbose=False).board

    def scores(board: dict) -> dict:
        return {(r["method"], r["protocol"], r["budget"], r["seed"]): r["accuracy"] for r in board["records"]}

    first = board()
    record = json.loads((kept / "digits" / "pretraining" / "conv.json").read_text())
    # a run's record is one line (CIFAR-10's 10,000 predictions, one per line, made 73 KB files)
    assert all(len(p.read_text().splitlines()) == 1 for p in (kept / "digits" / "conv").glob("*.json"))
    assert record["stats"]["feature_dim"] == first["datasets"]["digits"]["pretraining"]["conv"]["feature_dim"]
    board(same_machine=True)  # the model read back from its folder: its record, of its training, stays
    assert json.loads((kept / "digits" / "pretraining" / "conv.json").read_text()) == record
    again = board()
    assert not (out / "models").exists()  # nothing pretrained
    assert json.loads((kept / "digits" / "pretraining" / "conv.json").read_text()) == record
    assert scores(again) == scores(first) and all(r["reused"] for r in again["records"])
    assert again["datasets"]["digits"]["pretraining"]["conv"]["reused"]
    # a second seed at 5/class is not stored: conv is pretrained again, to the recorded weights
    # here (the same seed and machine), so its stored runs stand and only the new ones run
    more = board(seeds=2)
    assert (out / "models").is_dir()
    assert {(r["budget"], r["seed"], r["protocol"]) for r in more["records"]
            if r["method"] == "conv" and not r["reused"]} == {("5/class", 1, "linear"), ("5/class", 1, "knn")}
    # runs stored under weights that pretraining no longer gives: every conv run again
    path = kept / "digits" / "pretraining" / "conv.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "weights_sha256": "0" * 64}))
    for stored in (kept / "digits" / "conv").glob("*.json"):
        run = json.loads(stored.read_text())
        run["inputs"]["init"] = "0" * 64
        stored.unlink()
        (stored.parent / f"{digest(run['inputs'])}.json").write_text(json.dumps(run))
    last = board(seeds=3)  # seed 2 is not stored: conv pretrains, to other weights than recorded
    conv = [r for r in last["records"] if r["method"] == "conv"]
    assert len(conv) == 2 * 3 + 2 + 1 and not any(r["reused"] for r in conv)  # each run once
    assert json.loads(path.read_text())["weights_sha256"] != "0" * 64
    assert all(r["reused"] for r in last["records"] if r["method"] != "conv" and r["seed"] < 2)
