"""bench/export.py, shrunk to a dense model and a tiny segmenter: one parity entry each, within the
tolerance, and an architecture that is not registered is recorded as absent."""

from __future__ import annotations

from test_bench_common import run_main


def test_export_bench_writes_one_parity_entry_per_model(bench_script, monkeypatch, tmp_path):
    bench = bench_script("export")
    dense = ({"name": "dense", "code_dim": 8}, [], {"name": "digits", "limit": 60})
    missing = ({"name": "no-such-model"}, [], {})
    monkeypatch.setattr(bench, "AUTOENCODERS", {"dense": dense, "nothing": missing})
    seg_data = {"name": "shapes-seg", "options": {"n_train": 16, "n_test": 4, "size": 16}}
    monkeypatch.setattr(bench, "SHAPES_SEG", seg_data)
    monkeypatch.setattr(bench, "EPOCHS", 1)
    result = run_main(bench, monkeypatch, tmp_path / "export.json", "--runs", str(tmp_path / "runs"))
    assert list(result["parity"]) == ["dense", "nothing", "segmenter"]
    assert "no-such-model" in result["parity"]["nothing"]["absent"]
    dense_entry = result["parity"]["dense"]
    count = dense_entry["inputs"]["count"]
    assert dense_entry["max_abs_diff"] <= 1e-4 and count >= 2
    assert dense_entry["inputs"]["images"].startswith(f"{count} images of the validation split of digits")
    assert set(dense_entry["graphs"]) == {"encoder", "decoder"}
    assert result["parity"]["segmenter"]["graphs"]["segmenter"]["dynamic_size"] is True
    assert result["all_within_1e-4"] and result["command"].startswith("python bench/export.py")
    assert "machine" in result
