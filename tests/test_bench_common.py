"""bench/common.py: the command line, machine record and publishing every bench script shares."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any


def run_main(script: Any, monkeypatch: Any, out: Path, *argv: str) -> dict:
    """A bench script's ``main`` run with these arguments (and ``--out out``); its results, read back.
    (Used by the other bench tests.)"""
    monkeypatch.setattr(sys, "argv", [f"{script.__name__}.py", *argv, "--out", str(out)])
    script.main()
    return json.loads(out.read_text())


def test_command_reproduces_the_run_quoted(bench_script):
    common = bench_script("common")
    assert common.command("x.py", ["--out", "a b.json"]) == "python bench/x.py --out 'a b.json'"
    assert common.command("x.py", [], data=True) == "AEVISION_DATA=/work/shared/datasets python bench/x.py"


def test_provenance_is_wall_seconds_and_machine_with_what_was_asked(bench_script):
    common = bench_script("common")
    plain = common.provenance(time.time() - 2)
    assert list(plain) == ["wall_seconds", "machine"] and plain["wall_seconds"] >= 2
    assert "load_average" not in plain["machine"] and "note" not in plain["machine"]
    busy = common.machine("shared", load_average=True)
    assert busy["note"] == "shared" and len(busy["load_average"]) == 3 and "torch" in busy


def test_publish_writes_all_and_prints_what_is_shown(bench_script, tmp_path, capsys):
    common = bench_script("common")
    common.publish(tmp_path / "r.json", {"a": 1, "rows": [1, 2]}, {"a": 1})
    assert json.loads((tmp_path / "r.json").read_text()) == {"a": 1, "rows": [1, 2]}
    assert capsys.readouterr().out == '{"a": 1}\n'  # one line: throughput reads its children's last line
    assert common.mean_std([0.5, 0.7]) == {"mean": 0.6, "std": 0.1, "runs": [0.5, 0.7]}
    assert common.mean_std([0.5])["std"] == 0.0
