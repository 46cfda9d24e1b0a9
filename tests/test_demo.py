"""``aevision demo`` end to end (shortened): every promised output exists and is consistent."""

from __future__ import annotations

import json

from aevision.cli import main
from aevision.demo import BUDGETS, VARIANTS, budget_name


def test_demo_writes_metrics_grid_curves_and_table(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--epochs", "2", "--seeds", "1"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    methods = {"pixels", "pca-32", *VARIANTS}
    assert set(metrics["results"]) == methods
    for per_budget in metrics["results"].values():
        assert set(per_budget) == {budget_name(b) for b in BUDGETS}
        for cell in per_budget.values():
            assert 0.1 <= cell["mean"] <= 1.0 and len(cell["runs"]) == 1
    for key, winner in metrics["winner_per_budget"].items():
        assert metrics["results"][winner][key]["mean"] == max(
            r[key]["mean"] for r in metrics["results"].values())
    assert metrics["pretraining"]["conv"]["config"]["model"]["name"] == "conv"
    for name in ("reconstructions.png", "loss_curves.png", "summary.md"):
        assert (out / name).stat().st_size > 0
    table = capsys.readouterr().out
    assert "linear-probe test accuracy" in table and "pca-32" in table
