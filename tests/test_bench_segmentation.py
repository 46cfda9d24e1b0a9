"""bench/segmentation.py: a finished run is read back only for the same config, wherever its runs
folder now lies; a killed one resumes only under its own key (the run lifecycle's, engine/run.py)."""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture()
def bench(bench_script):
    return bench_script("segmentation")


def tiny(bench, n_train: int, ae_epochs: int | None = 1) -> dict:
    """The quick shapes-seg config shrunk to seconds: 16-px images, a two-stage autoencoder trained
    for ``ae_epochs`` (None: the quick config's)."""
    cfg = bench.quick(bench.CONFIG)["shapes-seg"]
    cfg["data"].update(n_train=n_train, n_test=8, size=16)
    cfg["autoencoder"]["model"]["channels"] = [4, 8]
    if ae_epochs is not None:
        cfg["autoencoder"]["train"]["epochs"] = ae_epochs
    return cfg


def kill_at(monkeypatch, epoch: int, run: Callable[[], object], folder: str = "") -> None:
    """Calls ``run``, in which the training run whose output folder's path contains ``folder`` dies
    as ``epoch`` starts (after the checkpoints of the epochs before it), as a killed process would."""
    from aevision.engine.loop import Trainer

    train_epoch = Trainer._train_epoch

    def train(self, *args, **kwargs):
        # _train_epoch(fit, epoch, report)
        if args[1] == epoch and folder in str(self.out_dir):
            raise KeyboardInterrupt
        return train_epoch(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "_train_epoch", train)
    with pytest.raises(KeyboardInterrupt):
        run()
    monkeypatch.setattr(Trainer, "_train_epoch", train_epoch)


def trained_runs(monkeypatch) -> list[str]:
    """The output folders of the training runs started from now on (read-back runs start none)."""
    from aevision.engine.loop import Trainer

    started: list[str] = []
    fit = Trainer.fit

    def counted(self, *args, **kwargs):
        started.append(self.out_dir.name)
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "fit", counted)
    return started


def test_finished_runs_are_read_back_from_a_moved_folder_and_only_for_the_same_config(
        bench, monkeypatch, tmp_path):
    cfg = tiny(bench, 32)
    data = bench.dataset("shapes-seg", cfg, None)
    trained = trained_runs(monkeypatch)

    def run(runs: Path, config: dict) -> dict:
        encoder, _, _ = bench.pretrain_encoder("shapes-seg", config, data, 0, runs)
        return bench.run_segment("shapes-seg", config, data, 0, runs, encoder=encoder, init="pretrained",
                                 labels=10)

    first = run(tmp_path / "a", cfg)
    assert trained == ["autoencoder", "10-pretrained"]
    assert run(tmp_path / "a", cfg) == first and len(trained) == 2
    shutil.move(tmp_path / "a", tmp_path / "b")
    assert run(tmp_path / "b", cfg) == first and len(trained) == 2
    longer = copy.deepcopy(cfg)
    longer["few"]["epochs"] += 1
    run(tmp_path / "b", longer)
    assert trained[2:] == ["10-pretrained"]  # the autoencoder is still the same run


def test_keep_reads_a_dataset_back_only_under_the_same_config_and_seeds(bench, tmp_path):
    cfg = bench.CONFIG
    results = tmp_path / "segmentation.json"
    runs = {"10_pretrained": [{"miou": 0.5, "seed": 0}]}
    results.write_text(json.dumps({"seeds": [0], "runs": {"shapes-seg": runs}, "config": cfg,
                                   "command": "python bench/segmentation.py", "wall_seconds": 1.0,
                                   "machine": {"cpu_count": 2}}))
    kept, provenance = bench.kept_runs(str(results), ["shapes-seg"], cfg, [0])
    assert kept == {"shapes-seg": runs}
    assert provenance["shapes-seg"]["command"] == "python bench/segmentation.py"
    with pytest.raises(SystemExit, match=r"holds runs of seeds \[0\], this run is for seeds \[0, 1\]"):
        bench.kept_runs(str(results), ["shapes-seg"], cfg, [0, 1])
    with pytest.raises(SystemExit, match=r"--keep penn-fudan: .* has no runs of penn-fudan"):
        bench.kept_runs(str(results), ["penn-fudan"], cfg, [0])
    other = copy.deepcopy(cfg)
    other["shapes-seg"]["few"]["epochs"] += 1
    with pytest.raises(SystemExit, match=r"--keep shapes-seg: .* runs of another config"):
        bench.kept_runs(str(results), ["shapes-seg"], other, [0])
    with pytest.raises(SystemExit, match=r"--keep: cannot read the results file"):
        bench.kept_runs(str(tmp_path / "missing.json"), ["shapes-seg"], cfg, [0])


def test_a_failed_run_ends_the_bench_with_its_error(bench, tmp_path):
    cfg = copy.deepcopy(bench.CONFIG)
    cfg["shapes-seg"]["data"]["n_train"] = -1  # every autoencoder job fails on loading the data
    with pytest.raises(Exception, match="n_train"):
        bench.run_datasets(["shapes-seg"], cfg, [0, 1, 2], None, tmp_path, 1, 1)
    assert not list(tmp_path.rglob("run.json"))  # nothing started


def test_set_changes_one_existing_value_and_refuses_a_typo(bench):
    cfg = bench.CONFIG
    before = copy.deepcopy(cfg)
    longer = bench.override(cfg, "shapes-seg.autoencoder.train.epochs=120")
    assert longer["shapes-seg"]["autoencoder"]["train"]["epochs"] == 120
    assert cfg == before  # the bench's own config untouched
    masked = bench.override(cfg, "shapes-seg.autoencoder.regularizers.0.p=0.5")  # a new option of an item
    assert masked["shapes-seg"]["autoencoder"]["regularizers"][0] == {"name": "denoising", "noise": "blocks",
                                                                      "p": 0.5}
    assert bench.override(cfg, "penn-fudan.segment.augment.zoom=1.5")["penn-fudan"]["segment"]["augment"][
        "zoom"] == 1.5
    assert bench.override(cfg, "shapes-seg.autoencoder.regularizers.0.noise=gaussian")[
        "shapes-seg"]["autoencoder"]["regularizers"][0]["noise"] == "gaussian"  # not JSON: a string
    assert bench.override(cfg, "shapes-seg.few.freeze_decoder=true")["shapes-seg"]["few"]["freeze_decoder"]
    # a new key only where aevision checks it (train.epoch would be its ConfigError) or a known option
    for typo in ("shapes-seg.few.freeze_decodr=true", "shapes-seg.autoencoder.epochs=1",
                 "shapes.autoencoder.train.epochs=1", "shapes-seg.autoencoder.regularizers.3.p=0.5",
                 "shapes-seg.budget=[10]", "shapes-seg.all.epochs.x=1", "epochs", "=3"):
        with pytest.raises(ValueError, match="--set"):
            bench.override(cfg, typo)


def test_validation_carves_the_same_images_out_of_the_training_split(bench):
    import torch

    from aevision.data.segset import SegSet, SegSplits

    images = torch.arange(20, dtype=torch.uint8).view(20, 1, 1, 1).expand(20, 1, 2, 2).contiguous()
    data = SegSplits(train=SegSet(images, torch.zeros(20, 2, 2, dtype=torch.uint8), ["bg"]),
                     test=SegSet(images[:3], torch.zeros(3, 2, 2, dtype=torch.uint8), ["bg"]))
    a, b = bench.carve_validation(data, 5), bench.carve_validation(data, 5)
    assert torch.equal(a.test.images, b.test.images) and len(a.test) == 5 and len(a.train) == 15
    held_out = set(a.test.images[:, 0, 0, 0].tolist())
    assert held_out.isdisjoint(a.train.images[:, 0, 0, 0].tolist())  # never trained on
    assert held_out | set(a.train.images[:, 0, 0, 0].tolist()) == set(range(20))
    with pytest.raises(ValueError, match="--validation 20: expected between 1 and 19"):
        bench.carve_validation(data, 20)


def test_validation_and_set_need_their_own_results_file(bench):
    args = bench.parse_args(["--validation", "shapes-seg=600", "--validation", "24", "--out", "v.json"])
    assert args.validation == {"shapes-seg": 24, "penn-fudan": 24}  # the later value wins
    assert bench.parse_args(["--validation", "penn-fudan=24", "--out", "v.json"]).validation == {
        "penn-fudan": 24}
    assert bench.parse_args([]).out == str(bench.DEFAULT_OUT) and bench.parse_args([]).validation == {}
    for argv in (["--validation", "600"], ["--set", "shapes-seg.all.epochs=3"],
                 ["--validation", "shapes=600", "--out", "v.json"], ["--validation", "0", "--out", "v.json"]):
        with pytest.raises(SystemExit):
            bench.parse_args(argv)


def test_claims_are_judged_on_the_test_split_only(bench):
    scores = {"miou_all": 0.92, "miou_10_pretrained": 0.5, "miou_10_scratch": 0.4, "miou_50_pretrained": 0.6,
              "miou_50_scratch": 0.5}
    assert all(bench.claims_met(scores).values())
    assert bench.claims_met({}) == {}
    # a few-mask trial without the all-masks run: its few-mask claims are still judged
    few_only = {k: v for k, v in scores.items() if k != "miou_all"}
    assert bench.claims_met(few_only) == {"shapes_10_pretrained_beats_scratch_by_5_points": True,
                                          "shapes_50_pretrained_not_worse": True}


def test_all_null_drops_the_all_masks_run(bench):
    full = bench.plan(bench.CONFIG["shapes-seg"])
    few = bench.plan(bench.override(bench.CONFIG, "shapes-seg.all=null")["shapes-seg"])
    assert full[0] == ("all", None, "pretrained") and few == full[1:]
    assert {labels for _, labels, _ in few} == {10, 50}


def test_all_masks_inits_the_first_is_the_headline(bench):
    cfg = bench.override(bench.CONFIG, "penn-fudan.all.inits=[scratch, pretrained]")["penn-fudan"]
    assert bench.plan(cfg)[:2] == [("all", None, "scratch"), ("all", None, "pretrained")]
    with pytest.raises(ValueError, match="inits"):
        bench.override(bench.CONFIG, "penn-fudan.few.inits=[scratch]")  # few masks always run both
    for bad in ("[]", "[scratch, scratch]", "[random]", "scratch"):
        with pytest.raises(ValueError, match=r"all\.inits: expected a list of distinct"):
            bench.plan(bench.override(bench.CONFIG, f"penn-fudan.all.inits={bad}")["penn-fudan"])

    def runs(*person: float) -> list[dict]:
        return [{"miou": 0.0, "iou": {"person": p}} for p in person]

    both = bench.summary_keys("penn-fudan", {"all_scratch": runs(0.7, 0.8), "all_pretrained": runs(0.6, 0.6),
                                             "10_pretrained": runs(0.5, 0.5)}, ["scratch", "pretrained"])
    assert both["pennfudan_person_iou_all"] == both["pennfudan_person_iou_all_scratch"] == pytest.approx(0.75)
    assert both["pennfudan_person_iou_all_std"] == pytest.approx(0.05)
    assert both["pennfudan_person_iou_all_pretrained"] == pytest.approx(0.6)
    assert both["pennfudan_person_iou_10_pretrained"] == pytest.approx(0.5)
    # one all-mask init (the default): its run is reported as <prefix>_all only, as before
    one = bench.summary_keys("shapes-seg", {"all_pretrained": [{"miou": 0.9}], "10_scratch": [{"miou": 0.4}]},
                             ["pretrained"])
    assert set(one) == {"miou_all", "miou_all_std", "miou_10_scratch", "miou_10_scratch_std"}


def test_a_killed_autoencoder_resumes_to_the_uninterrupted_weights_only_under_its_own_key(
        bench, monkeypatch, tmp_path):
    from aevision.io import read_safetensors

    cfg = tiny(bench, 64, ae_epochs=None)  # two epochs: the kill falls between them
    data = bench.dataset("shapes-seg", cfg, None)

    def folder(runs: Path) -> Path:
        return runs / "shapes-seg" / "seed0" / "autoencoder"

    def killed_at(epoch: int, config: dict, runs: Path) -> None:
        kill_at(monkeypatch, epoch, lambda: bench.pretrain_encoder("shapes-seg", config, data, 0, runs))

    bench.pretrain_encoder("shapes-seg", cfg, data, 0, tmp_path / "ref")
    ref = read_safetensors(folder(tmp_path / "ref") / "model.safetensors")

    killed_at(1, cfg, tmp_path / "killed")
    out = folder(tmp_path / "killed")
    assert (out / "checkpoints" / "last.ckpt").is_file() and not (out / "summary.json").exists()
    _, seconds, cpu = bench.pretrain_encoder("shapes-seg", cfg, data, 0, tmp_path / "killed")
    record = json.loads((out / "summary.json").read_text())
    assert record["resumed"] is True and seconds > 0
    # CPU time too, summed over the epochs of both processes (checkpointed with each epoch)
    epochs_cpu = [row["cpu_seconds"] for row in record["fit"]["history"]]
    assert len(epochs_cpu) == 2 and all(c > 0 for c in epochs_cpu)
    assert cpu == record["cpu_seconds"] == pytest.approx(sum(epochs_cpu), abs=1e-3)
    resumed = read_safetensors(out / "model.safetensors")
    assert set(resumed) == set(ref) and all((resumed[k] == ref[k]).all() for k in ref)

    # a run under another key (the data's flips are not in the checkpoint's own config), killed
    # before its first checkpoint, then re-run: it starts afresh, not from the first key's checkpoint
    flipped = copy.deepcopy(cfg)
    flipped["autoencoder"]["flips"] = True
    killed_at(1, cfg, tmp_path / "other")
    killed_at(0, flipped, tmp_path / "other")
    _, _, cpu = bench.pretrain_encoder("shapes-seg", flipped, data, 0, tmp_path / "other")
    record = json.loads((folder(tmp_path / "other") / "summary.json").read_text())
    assert record["resumed"] is False and record["cpu_seconds"] is not None and cpu is not None


def test_a_killed_segmenter_resumes_to_the_uninterrupted_weights_only_around_the_same_autoencoder(
        bench, monkeypatch, tmp_path):
    from aevision.io import read_safetensors

    cfg = tiny(bench, 64)
    cfg["few"].update(epochs=3, freeze_epochs=1)  # the kill falls after the frozen epoch
    data = bench.dataset("shapes-seg", cfg, None)

    def segmenter(config: dict, runs: Path) -> tuple[dict, Path]:
        encoder, _, _ = bench.pretrain_encoder("shapes-seg", config, data, 0, runs)
        result = bench.run_segment("shapes-seg", config, data, 0, runs, encoder=encoder, init="pretrained",
                                   labels=10)
        return result, runs / "shapes-seg" / "seed0" / "10-pretrained"

    def killed(config: dict, runs: Path) -> None:  # the segmenter only, as its epoch 2 starts
        kill_at(monkeypatch, 2, lambda: segmenter(config, runs), folder="10-pretrained")

    ref, ref_dir = segmenter(cfg, tmp_path / "ref")
    killed(cfg, tmp_path / "killed")
    result, out = segmenter(cfg, tmp_path / "killed")
    assert result["resumed"] is True and result["cpu_seconds"] > 0 and result["seconds"] > 0
    assert result["miou"] == ref["miou"]
    want, got = (read_safetensors(d / "model.safetensors") for d in (ref_dir, out))
    assert set(got) == set(want) and all((got[k] == want[k]).all() for k in want)

    # killed around one autoencoder, re-run around a retrained one: starts afresh
    killed(cfg, tmp_path / "other")
    retrained = bench.override({"shapes-seg": cfg}, "shapes-seg.autoencoder.augment={jitter: 0.1}")
    result, _ = segmenter(retrained["shapes-seg"], tmp_path / "other")
    assert "resumed" not in result and result["cpu_seconds"] is not None


def test_autoencoder_augmentation_reaches_the_run_only_when_set(bench, tmp_path):
    cfg = tiny(bench, 32)
    data = bench.dataset("shapes-seg", cfg, None)
    plain, _, _ = bench.pretrain_encoder("shapes-seg", cfg, data, 0, tmp_path / "plain")
    assert json.loads((Path(plain) / "summary.json").read_text())["config"]["augment"]["zoom"] == 1.0
    cfg = bench.override({"shapes-seg": cfg}, "shapes-seg.autoencoder.augment={zoom: 1.3, jitter: 0.1}")[
        "shapes-seg"]
    out, _, _ = bench.pretrain_encoder("shapes-seg", cfg, data, 0, tmp_path / "aug")
    summary = json.loads((Path(out) / "summary.json").read_text())
    assert summary["config"]["augment"]["zoom"] == 1.3 and summary["config"]["augment"]["jitter"] == 0.1


def test_a_replaced_autoencoder_retrains_its_segmenters_but_not_scratch_ones_of_the_same_network(
        bench, monkeypatch, tmp_path):
    cfg = tiny(bench, 32)
    data = bench.dataset("shapes-seg", cfg, None)
    trained = trained_runs(monkeypatch)

    def around(config: dict) -> set[str]:
        """Train the autoencoder, then the segmenters that are not finished around it: which ran."""
        del trained[:]
        encoder, _, _ = bench.pretrain_encoder("shapes-seg", config, data, 0, tmp_path)
        for init in ("pretrained", "scratch"):
            bench.run_segment("shapes-seg", config, data, 0, tmp_path, encoder=encoder, init=init, labels=10)
        return {name.removeprefix("10-") for name in trained if name != "autoencoder"}

    assert around(cfg) == {"pretrained", "scratch"}
    assert around(cfg) == set()  # all finished: read back

    def changed(config: dict, assignment: str) -> dict:
        return bench.override({"shapes-seg": config}, f"shapes-seg.{assignment}")["shapes-seg"]

    augmented = changed(cfg, "autoencoder.augment={jitter: 0.1}")
    assert around(augmented) == {"pretrained"}  # same network, other weights: scratch stays
    wider = changed(augmented, "autoencoder.model.channels=[4, 12]")
    assert around(wider) == {"pretrained", "scratch"}  # another network: both retrain
