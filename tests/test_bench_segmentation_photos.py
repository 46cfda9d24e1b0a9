"""bench/segmentation_photos.py end to end on tiny fake Penn-Fudan and Clothing Co-Parsing folders:
one pool autoencoder, then every segmenter, pretrained and scratch with the same steps."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from PIL import Image

from test_segmentation_photos import fake_ccp


def fake_pennfudan(root, n=8):
    folder = root / "PennFudanPed"
    (folder / "PNGImages").mkdir(parents=True)
    (folder / "PedMasks").mkdir()
    for i in range(n):
        Image.fromarray(np.full((40, 50, 3), 30 * i, dtype=np.uint8)).save(folder / "PNGImages" / f"P{i}.png")
        inst = np.zeros((40, 50), dtype=np.uint8)
        inst[5:35, 5:15], inst[10:30, 30:40] = 1, 2
        Image.fromarray(inst).save(folder / "PedMasks" / f"P{i}_mask.png")


TINY = ["pool.data.image_size=[16,16]", "pool.model.channels=[4,8]", "pool.regularizers.0.block=4",
        "pool.train.epochs=1"]
for name, size, budgets in (("penn-fudan", "[16,20]", "[2]"), ("clothing-co-parsing", "[16,12]", "[2,3]")):
    TINY += [f"datasets.{name}.data.image_size={size}", f"datasets.{name}.data.options={{n_test: 2}}",
             f"datasets.{name}.budgets={budgets}", f"datasets.{name}.all.epochs=1",
             f"datasets.{name}.few.epochs=1", f"datasets.{name}.few.epoch_steps=3"]


def test_the_script_pretrains_the_pool_once_and_compares_inits_at_equal_steps(
        bench_script, monkeypatch, tmp_path, one_thread):
    fake_ccp(tmp_path / "data")
    fake_pennfudan(tmp_path / "data")
    bench = bench_script("segmentation_photos")
    out = tmp_path / "out.json"
    argv = ["segmentation_photos.py", "--data-root", str(tmp_path / "data"), "--runs", str(tmp_path / "runs"),
            "--out", str(out), "--seeds", "2",
            *[a for s in [*TINY, "segment.pretrained_lr_scale=0.5", "segment.freeze_norm=true"]
              for a in ("--set", s)]]
    monkeypatch.setattr(sys, "argv", argv)
    bench.main()
    r = json.loads(out.read_text())
    assert r["pool_images"] == 6 + 4 + 6  # CCP's training and unmasked photos, Penn-Fudan's training
    assert r["pool_pretraining"]["steps"] >= 1 and r["pool_pretraining"]["seconds"] is not None
    # CPU time beside wall time: a run paused or sharing the machine shows it in the wall time only
    pool = r["pool_pretraining"]
    assert pool["train_cpu_seconds"] > 0 and 0 < pool["train_seconds"] <= pool["seconds"]
    assert len(r["pool_pretraining"]["epoch_seconds"]) == 1 and r["complete"] and r["seeds"] == [0, 1]
    for key in ("pennfudan_person_iou_all_pretrained", "pennfudan_person_iou_all_scratch",
                "pennfudan_person_iou_2_pretrained", "ccp_person_iou_all", "ccp_person_iou_3_scratch"):
        assert 0 <= r[key] <= 1 and f"{key}_std" in r
    assert r["same_steps_pretrained_and_scratch"]
    assert [x["steps"] for x in r["runs"]["clothing-co-parsing"]["2_scratch"]] == [3, 3]
    assert set(r["claims_met"]) == {"pennfudan_all_pretrained_at_least_0.75", "ccp_all_at_least_0.92"}
    assert "datasets.penn-fudan.budgets=[2]" in r["overrides"] and r["config"]["pool"]["train"]["epochs"] == 1
    every = [x for runs in r["runs"].values() for seeds in runs.values() for x in seeds]
    assert all(0 <= x["val_person_iou"] <= 1 and 0 <= x["val_person_iou_hflip"] <= 1 for x in every)
    assert all(x["cpu_seconds"] > 0 and x["seconds"] > 0 for x in every)
    gains = r["val_person_iou_gain_of_hflip_tta"]
    assert set(gains) == {"penn-fudan", "clothing-co-parsing"} and all(-1 <= g <= 1 for g in gains.values())
    ccp = [x for seeds in r["runs"]["clothing-co-parsing"].values() for x in seeds]
    assert gains["clothing-co-parsing"] == round(sum(x["val_person_iou_hflip"] - x["val_person_iou"]
                                                     for x in ccp) / len(ccp), 4)
    assert {(x["best_epoch"], x["monitored"]) for x in every} == {(1, "val_miou")}  # 1 epoch each
    # segment.* settings reach every segmenter; the pretrained weights' own only the pretrained ones
    seed0 = tmp_path / "runs" / "penn-fudan" / "seed0"
    saved = {init: json.loads((seed0 / f"2-{init}" / "config.json").read_text())["config"]
             for init in ("pretrained", "scratch")}
    assert [saved[i]["pretrained_lr_scale"] for i in ("pretrained", "scratch")] == [0.5, 1.0]
    assert [saved[i]["freeze_norm"] for i in ("pretrained", "scratch")] == [True, False]
    assert saved["scratch"]["decoder"]["stem_channels"] == 16


def test_runs_go_seed_by_seed_few_masks_first(bench_script):
    bench = bench_script("segmentation_photos")
    order = bench.schedule(bench.CONFIG, 2)
    assert len(order) == 2 * (4 + 5)  # Penn-Fudan: 2 all-mask + 2 at 10 masks; CCP: 1 + 4
    seed0 = [(name, run[0], run[2]) for seed, name, run in order if seed == 0]
    assert seed0 == [("penn-fudan", "10", "pretrained"), ("penn-fudan", "10", "scratch"),
                     ("clothing-co-parsing", "10", "pretrained"), ("clothing-co-parsing", "10", "scratch"),
                     ("clothing-co-parsing", "50", "pretrained"), ("clothing-co-parsing", "50", "scratch"),
                     ("penn-fudan", "all", "pretrained"), ("penn-fudan", "all", "scratch"),
                     ("clothing-co-parsing", "all", "pretrained")]
    assert [seed for seed, _, _ in order] == [0] * 9 + [1] * 9
    assert {run[0] for _, _, run in bench.schedule(bench.CONFIG, 1, "few")} == {"10", "50"}
    assert {run[0] for _, _, run in bench.schedule(bench.CONFIG, 1, "all")} == {"all"}
    ccp_all = bench.schedule(bench.CONFIG, 1, "all", ["clothing-co-parsing"])
    assert [(name, run[0], run[2]) for _, name, run in ccp_all] == [
        ("clothing-co-parsing", "all", "pretrained")]
    assert bench.parse_args(["--dataset", "penn-fudan"]).datasets == ["penn-fudan"]


def test_continue_from_trains_only_the_runs_an_earlier_file_lacks(
        bench_script, monkeypatch, tmp_path, one_thread):
    fake_ccp(tmp_path / "data")
    fake_pennfudan(tmp_path / "data")
    bench = bench_script("segmentation_photos")
    tiny = [a for s in TINY for a in ("--set", s)]

    def run(out, runs, *extra):
        monkeypatch.setattr(sys, "argv", ["segmentation_photos.py", "--data-root", str(tmp_path / "data"),
                                          "--runs", str(tmp_path / runs), "--out", str(tmp_path / out),
                                          *tiny, *extra])
        bench.main()
        return json.loads((tmp_path / out).read_text())

    first = run("one.json", "a", "--seeds", "1")
    # a machine that lost --runs: seed 0 is read back from the file, only seed 1 trains (the pool too)
    second = run("two.json", "b", "--seeds", "2", "--continue-from", str(tmp_path / "one.json"))
    assert second["complete"] and second["runs_trained_here"] == 9 and (tmp_path / "b" / "pool").is_dir()
    for name, tags in first["runs"].items():
        for tag, seeds in tags.items():
            assert second["runs"][name][tag][0] == seeds[0] and len(second["runs"][name][tag]) == 2
    assert not (tmp_path / "b" / "penn-fudan" / "seed0").exists()
    assert second["continued_from"][0]["runs"] == 9
    # nothing pretrained left to train: no pool pretraining, the earlier file's record stands
    third = run("three.json", "c", "--seeds", "2", "--dataset", "penn-fudan",
                "--continue-from", str(tmp_path / "two.json"))
    assert third["runs_trained_here"] == 0 and not (tmp_path / "c").exists()
    assert third["pool_pretraining"] == second["pool_pretraining"] and not third["complete"]
    # another config's runs are never mixed in
    with pytest.raises(SystemExit, match=r"one\.json: its config differs"):
        run("four.json", "d", "--set", "pool.train.epochs=2", "--continue-from", str(tmp_path / "one.json"))
