"""bench/anomaly_threshold.py on digits, one normal class, one epoch: the results' keys, the
threshold stored beside the model and the rates it gives on the test images."""

from __future__ import annotations

import json

from test_bench_common import run_main

KEYS = ["claim", "command", "target_fpr", "within_band", "fpr", "mean_detection_rate", "runs", "protocol",
        "config", "wall_seconds", "machine"]


def test_anomaly_threshold_calibrates_each_class_on_images_it_did_not_train_on(bench_script, monkeypatch,
                                                                               tmp_path):
    script = bench_script("anomaly_threshold")
    runs = tmp_path / "runs"
    result = run_main(script, monkeypatch, tmp_path / "t.json", "--dataset", "digits", "--classes", "3",
                      "--epochs", "1", "--fpr", "0.1", "--runs", str(runs))
    assert list(result) == KEYS and result["target_fpr"] == 0.1
    assert result["command"].startswith(
        "AEVISION_DATA=/work/shared/datasets python bench/anomaly_threshold.py ")
    (run,) = result["runs"]
    assert {"normal_class", "fpr", "detection_rate", "threshold", "calibration_images"} <= set(run)
    assert run["normal_class"] == 3 and 0.0 <= run["fpr"] <= 1.0 and 0.0 <= run["detection_rate"] <= 1.0
    # half of the class's training images calibrate, the other half train: none is used twice
    assert abs(run["calibration_images"] - run["training_images"]) <= 1
    assert run["rank"] == -(-(run["calibration_images"] + 1) * 9 // 10)  # ceil((n+1)(1-0.1))
    stored = json.loads((runs / "normal-3" / "threshold.json").read_text())
    assert stored["threshold"] == run["threshold"]
    assert stored["calibration_images"] == run["calibration_images"]
    assert result["fpr"]["runs"] == [run["fpr"]] and result["mean_detection_rate"] == run["detection_rate"]
