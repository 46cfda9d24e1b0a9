"""bench/segmentation.py: a finished run is read back only for the same config, wherever its runs
folder now lies (the keys hold paths relative to it)."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest


@pytest.fixture()
def bench(bench_script):
    return bench_script("segmentation")


def test_finished_runs_are_read_back_from_a_moved_folder_and_only_for_the_same_config(
        bench, monkeypatch, tmp_path):
    trained: list[str] = []

    def fake_segment(config, data):
        trained.append(config["output_dir"])
        return SimpleNamespace(metrics={"miou": 0.5 + len(trained) / 100, "iou": {"circle": 0.4},
                                        "mean_dice": 0.6, "pixel_accuracy": 0.9})

    monkeypatch.setattr(bench, "segment", fake_segment)
    cfg = bench.CONFIG["shapes-seg"]

    def run(runs: Path, config: dict) -> dict:
        encoder = str(runs / "shapes-seg" / "seed0" / "autoencoder")
        return bench.run_segment("shapes-seg", config, None, 0, runs, encoder=encoder, init="pretrained",
                                 labels=10)

    first = run(tmp_path / "a", cfg)
    assert run(tmp_path / "a", cfg) == first and len(trained) == 1
    shutil.move(tmp_path / "a", tmp_path / "b")
    assert run(tmp_path / "b", cfg) == first and len(trained) == 1
    longer = copy.deepcopy(cfg)
    longer["few"]["epochs"] += 1
    assert run(tmp_path / "b", longer)["miou"] != first["miou"] and len(trained) == 2


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
    assert not list(tmp_path.rglob("bench.json"))
