"""bench/segmentation.py: a finished run is read back only for the same config, wherever its runs
folder now lies (the keys hold paths relative to it)."""

from __future__ import annotations

import copy
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
