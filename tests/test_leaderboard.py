"""The leaderboard says what the numbers support: choices at the edge of a grid, wins beyond the
noise of the seeds, readable numbers, headers and plots."""

from __future__ import annotations

import pytest
import torch

from aevision.cli import main


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


TINY = ["benchmark", "quick",
        "models={tiny: {model: {name: dense, code_dim: 8}, train: {epochs: 1, batch_size: 64}}}",
        "baselines=[pixels]", "protocols.knn.enabled=false", "protocols.finetune.enabled=false",
        "protocols.finetune.models=null", "imbalance.models=null",
        "imbalance.ratio=null", "confusion_png=false", "--epochs", "1"]


def test_benchmark_says_when_the_probe_chose_c_at_an_edge_of_its_grid(tmp_path, capsys):
    # C <= 1e-3 is too strong for the 64 pixels of digits: the weakest value tried wins
    assert main([*TINY, "protocols.linear.c_grid=[1.0e-4,1.0e-3]", "--labels", "all",
                 "--seeds", "1", "-o", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "C at an edge of its grid" in printed and "pixels on digits at all: C = 0.001" in printed
    md = (tmp_path / "leaderboard.md").read_text()
    assert "## Linear probe: C at an edge of its grid" in md
    assert ("- pixels on digits at all: C = 0.001, the highest end of the grid of 0.0001 .. 0.001, "
            "in 1 of 1 runs") in md
