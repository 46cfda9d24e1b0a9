"""bench/retrieval.py on digits, one candidate, one epoch: the results' keys, and ``--reuse`` reads a
model back only when it was trained as its candidate is configured."""

from __future__ import annotations

from test_bench_common import run_main

KEYS = ["claim", "command", "protocol", "config", "results", "digits", "wall_seconds", "machine"]


def run(retrieval, monkeypatch, tmp_path, *extra: str) -> dict:
    return run_main(retrieval, monkeypatch, tmp_path / "retrieval.json", "--datasets", "digits",
                    "--candidates", "dense", "--epochs", "1", "--val-queries", "50", "--threads", "1",
                    "--runs", str(tmp_path / "runs"), *extra)


def test_retrieval_writes_its_keys_and_reuses_only_the_same_candidate(bench_script, monkeypatch, tmp_path):
    retrieval = bench_script("retrieval")
    first = run(retrieval, monkeypatch, tmp_path)
    assert list(first) == KEYS
    assert list(first["digits"]) == ["map_aevision", "map_pixels", "map_pca", "search_1000_queries_s"]
    result = first["results"]["digits"]
    assert result["aevision_encoder"] == "dense"
    assert result["speed_s"]["gallery"] == result["sizes"]["gallery"]
    assert "reused" not in result["pretraining"]["dense"]

    again = run(retrieval, monkeypatch, tmp_path, "--reuse")["results"]["digits"]
    assert again["pretraining"]["dense"]["reused"] is True
    assert again["test"] == result["test"]

    # another training (epochs): trained again, not read back
    other = run(retrieval, monkeypatch, tmp_path, "--reuse", "--epochs", "2")["results"]["digits"]
    assert "reused" not in other["pretraining"]["dense"] and other["pretraining"]["dense"]["epochs"] == 2
