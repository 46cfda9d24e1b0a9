"""Calibrated anomaly thresholds (split conformal on normal images): the rank, the rate it
guarantees, the stored file and its model hash, and ``aevision anomaly --calibrate``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aevision.cli import main
from aevision.data.imageset import ImageSet
from aevision.errors import AevisionError
from aevision.models import build_model, save_model
from aevision.tasks.anomaly_report import calibrate, score_images
from aevision.tasks.calibration import (
    THRESHOLD_FILE,
    Threshold,
    conformal_rank,
    conformal_threshold,
    stored_threshold,
)


def test_conformal_rank_by_hand():
    assert conformal_rank(19, 0.05) == 19  # ceil(20 * 0.95) = 19: the largest score
    assert conformal_rank(99, 0.1) == 90  # ceil(100 * 0.9), not 91 by rounding error
    assert conformal_rank(1000, 0.05) == 951
    with pytest.raises(AevisionError, match=r"18 normal images are too few .* need at least 19"):
        conformal_rank(18, 0.05)
    with pytest.raises(AevisionError, match="--fpr"):
        conformal_rank(100, 1.5)
    threshold, k = conformal_threshold(torch.arange(20, 0, -1).float(), 0.1)  # 20..1
    assert (threshold, k) == (19.0, 19)  # ceil(21 * 0.9) = 19: the 19th smallest of 1..20


def test_conformal_threshold_keeps_the_false_positive_rate():
    """Over many calibrations on n = 99 normal scores, the rate of fresh normal scores above the
    threshold averages between fpr - 1/(n+1) and fpr (the split-conformal guarantee)."""
    g = torch.Generator().manual_seed(0)
    rates = []
    for _ in range(400):
        cal, fresh = torch.randn(99, generator=g), torch.randn(2000, generator=g)
        threshold, _ = conformal_threshold(cal.exp(), 0.1)  # any distribution: a skewed one
        rates.append(float((fresh.exp() > threshold).float().mean()))
    assert 0.09 - 0.005 <= float(np.mean(rates)) <= 0.10 + 0.005


def model_folder(tmp_path, name="m"):
    torch.manual_seed(0)
    model = build_model("dense", (1, 8, 8), {"code_dim": 4}).eval()
    save_model(model, tmp_path / name)
    return model, tmp_path / name


def test_calibrate_stores_the_threshold_and_refuses_other_weights(tmp_path):
    model, folder = model_folder(tmp_path)
    normal = ImageSet(torch.randint(0, 100, (40, 1, 8, 8), dtype=torch.uint8))
    found = calibrate(model, folder, normal, fpr=0.05, source="normal images")
    stored = json.loads((folder / THRESHOLD_FILE).read_text())
    assert stored["target_fpr"] == 0.05 and stored["calibration_images"] == 40 and stored["rank"] == 39
    assert stored["score"] == {"score": "recon"} and len(stored["model_sha256"]) == 64
    assert stored_threshold(folder) == found
    assert found.threshold == float(score_images(model, folder, normal).scores.sort().values[38])

    data = ImageSet(torch.cat([normal.images[:4], torch.full((2, 1, 8, 8), 255, dtype=torch.uint8)]))
    scored = score_images(model, folder, data)
    assert scored.threshold == found.threshold and "false-positive rate 0.05 on 40" in scored.rule
    assert [r["anomalous"] for r in scored.rows()] == found.flags(scored.scores).tolist()
    assert scored.rows()[0]["threshold"] == found.threshold
    # a stored threshold for another score says nothing about this one
    with pytest.raises(AevisionError, match="--score knn: needs --reference"):
        score_images(model, folder, data, score="knn")

    save_model(build_model("dense", (1, 8, 8), {"code_dim": 4}), folder)  # retrained weights
    with pytest.raises(AevisionError, match=r"threshold\.json: calibrated for other weights"):
        stored_threshold(folder)
    (folder / THRESHOLD_FILE).write_text('{"threshold": 1}')
    with pytest.raises(AevisionError, match="not an anomaly threshold file"):
        stored_threshold(folder)


def test_calibrate_a_density_score_on_its_reference(tmp_path):
    model, folder = model_folder(tmp_path)
    ref, cal = tmp_path / "ref", tmp_path / "cal"
    for d in (ref, cal):
        d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(30):
        Image.fromarray(rng.integers(0, 100, (8, 8), dtype=np.uint8)).save(ref / f"{i}.png")
        Image.fromarray(rng.integers(0, 100, (8, 8), dtype=np.uint8)).save(cal / f"{i}.png")
    normal = ImageSet(torch.as_tensor(rng.integers(0, 100, (30, 1, 8, 8), dtype=np.uint8)))
    found = calibrate(model, folder, normal, fpr=0.1, source="cal", score="knn", k=3, reference=str(ref))
    assert found.score["score"] == "knn" and found.score["k"] == 3 and found.rank == 28
    same = score_images(model, folder, normal, score="knn", k=3, reference=str(ref))
    assert same.threshold == found.threshold
    other_k = score_images(model, folder, normal, score="knn", k=2, reference=str(ref))
    assert other_k.threshold != found.threshold and other_k.rule == "reference 0.99 quantile"


def test_anomaly_cli_calibrates_then_labels_with_the_stored_threshold(tmp_path, capsys):
    _, folder = model_folder(tmp_path)
    cal, test = tmp_path / "cal", tmp_path / "test"
    for d in (cal, test):
        d.mkdir()
    rng = np.random.default_rng(1)
    for i in range(25):
        Image.fromarray(rng.integers(0, 100, (8, 8), dtype=np.uint8)).save(cal / f"{i}.png")
    for i in range(3):
        Image.fromarray(rng.integers(0, 100, (8, 8), dtype=np.uint8)).save(test / f"normal{i}.png")
        Image.fromarray(np.full((8, 8), 255, dtype=np.uint8)).save(test / f"white{i}.png")
    assert main(["anomaly", str(folder), "--calibrate", str(cal), "--fpr", "0.05"]) == 0
    out = capsys.readouterr().out
    assert "score rank 25 of 25 normal images" in out and "scored" not in out
    stored = Threshold(**json.loads((folder / THRESHOLD_FILE).read_text()))

    csv_path = tmp_path / "scores.csv"
    assert main(["anomaly", str(folder), str(test), "-o", str(csv_path)]) == 0
    out = capsys.readouterr().out
    assert f"threshold (calibrated for false-positive rate 0.05 on 25 normal images ({cal}))" in out
    rows = {Path(r["image"]).name: r for r in csv.DictReader(csv_path.open())}
    assert all(float(r["threshold"]) == stored.threshold for r in rows.values())
    assert all(r["anomalous"] == str(int(float(r["score"]) > stored.threshold)) for r in rows.values())
    assert all(rows[f"white{i}.png"]["anomalous"] == "1" for i in range(3))

    assert main(["anomaly", str(folder), "--calibrate", str(cal), "--fpr", "0.01"]) == 2
    assert "25 normal images are too few for --fpr 0.01" in capsys.readouterr().err
    assert main(["anomaly", str(folder), "--calibrate", str(cal), "--fpr", "0"]) == 2
    assert "--fpr" in capsys.readouterr().err


def test_calibrating_on_a_dataset_name_uses_its_held_out_validation_images(tmp_path, capsys):
    """Not its official training set: the model trained on those, so their scores are too low and
    the threshold would flag far more normal images than --fpr."""
    import torch

    from aevision.config import DataConfig
    from aevision.data import load_dataset
    from aevision.data.inputs import dataset_inputs
    from aevision.models.io import pretraining_carve

    run = tmp_path / "run"
    assert main(["pretrain", "--dataset", "digits", "--model", "dense", "--epochs", "1", "--no-progress",
                 "--seed", "1", "data.val_fraction=0.3", "-o", str(run)]) == 0
    val = json.loads((run / "summary.json").read_text())["data"]["val"]["images"]
    capsys.readouterr()
    assert main(["anomaly", str(run), "--calibrate", "digits", "--fpr", "0.05"]) == 0
    assert f"of {val} normal images" in capsys.readouterr().out
    # the very images pretraining validated on (its fraction and seed, not the command's --seed 0)
    carve = pretraining_carve(str(run), "digits")
    assert carve == (0.3, 1, None, None)
    held_out = load_dataset(DataConfig(name="digits", val_fraction=0.3), seed=1).val.images
    assert torch.equal(dataset_inputs("digits", "val", 1, (8, 8), carve=carve).data.images, held_out)
    (run / "report.html").write_text("<html>the old model</html>")
    assert (run / "threshold.json").is_file()
    assert main(["pretrain", "--dataset", "digits", "--model", "dense", "--epochs", "2", "--no-progress",
                 "-o", str(run), "--overwrite"]) == 0  # new weights: what was made from the old goes
    assert not (run / "threshold.json").exists() and not (run / "report.html").exists()
    scores, feats = tmp_path / "a.csv", tmp_path / "f.npy"
    assert main(["anomaly", str(run), "--dataset", "digits", "--limit", "5", "-o", str(scores)]) == 0
    assert main(["encode", str(run), "--dataset", "digits", "--limit", "5", "-o", str(feats)]) == 0
    named = sorted(r["image"] for r in csv.DictReader(scores.open()))  # the rows encode says they are
    indices = json.loads(feats.with_suffix(".rows.json").read_text())["indices"]
    assert named == sorted(f"digits#{i}" for i in indices) and min(indices) >= 1348  # test images
