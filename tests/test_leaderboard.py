"""The leaderboard says what the numbers support: choices at the edge of a grid, wins beyond the
noise of the seeds, readable numbers, headers and plots."""

from __future__ import annotations

import torch

from aevision.cli import main

THREADS = []


def setup_module():
    """Tiny models and probes: one torch thread (a second only adds waiting on a busy machine)."""
    THREADS.append(torch.get_num_threads())
    torch.set_num_threads(1)


def teardown_module():
    torch.set_num_threads(THREADS.pop())


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


def _records(method, kind, budget, accuracies, seed=0):
    return [{"dataset": "digits", "protocol": "linear", "imbalance": None, "loss": None, "method": method,
             "budget": budget, "kind": kind, "labels_per_class": 5.0 if budget == "5/class" else 120.1,
             "seed": seed + i, "accuracy": a, "balanced_accuracy": a, "macro_f1": a, "selection": {},
             "wall_seconds": 1.0, "images_per_s": 100.0} for i, a in enumerate(accuracies)]


def _board(records):
    from aevision.benchmark import leaderboard

    datasets = {"digits": {"methods": {"conv": {"dim": 32}, "dense": {"dim": 32}, "pixels": {"dim": 64},
                                       "pca-32": {"dim": 32}}, "train": 1000}}
    rows = leaderboard.aggregate(records)
    return {"rows": rows, "verdicts": leaderboard.verdicts(rows, datasets), "datasets": datasets}


def test_a_single_run_is_judged_by_mcnemars_test_on_the_test_images():
    from aevision.benchmark import leaderboard

    labels = torch.arange(1000) % 10
    wrong = (labels + 1) % 10
    def run(right):  # the first `right` images correct
        return torch.where(torch.arange(1000) < right, labels, wrong)

    bits = {n: leaderboard.correct_bits(run(n), labels) for n in (600, 560, 590)}
    assert leaderboard.mcnemar_p(bits[600], bits[600]) == 1.0
    # 40 images only the first gets right, none the other way: far beyond chance
    assert leaderboard.mcnemar_p(bits[600], bits[560]) < 1e-6
    # 10 against 0 discordant images: p = 2 / 2**10
    assert abs(leaderboard.mcnemar_p(bits[600], bits[590]) - 2 / 1024) < 1e-9
    # the same accuracies, different images: 100 right only by one, 100 only by the other
    shifted = torch.where((torch.arange(1000) >= 100) & (torch.arange(1000) < 700), labels, wrong)
    assert leaderboard.mcnemar_p(bits[600], leaderboard.correct_bits(shifted, labels)) == 1.0
    records = [*_records("conv", "autoencoder", "all", [0.600]),
               *_records("pixels", "baseline", "all", [0.560]),
               *_records("pca-32", "baseline", "all", [0.590])]
    for r, n in zip(records, (600, 560, 590), strict=True):
        r["test_correct"] = bits[n]
    ver = {v["baseline"]: v for v in _board(records)["verdicts"]}
    assert ver["pixels"]["verdict"] == "wins" and ver["pixels"]["beats"] and ver["pixels"]["n_seeds"] == 1
    assert ver["pca-32"]["verdict"] == "wins" and ver["pca-32"]["p_value"] < 0.01


def test_a_win_must_hold_across_seeds_and_one_run_gets_no_verdict(capsys):
    from aevision.benchmark import leaderboard

    records = [
        # the case: 0.8382 +- 0.0148 vs 0.8374 +- 0.0111, the order changing with the seed
        *_records("conv", "autoencoder", "5/class", [0.8520, 0.8226, 0.8400]),
        *_records("pca-32", "baseline", "5/class", [0.8400, 0.8260, 0.8462]),
        # ahead on every seed by about the same margin: a win, however small the stds
        *_records("dense", "autoencoder", "5/class", [0.8700, 0.8450, 0.8620]),
        *_records("pixels", "baseline", "5/class", [0.8400, 0.8160, 0.8300]),
        *_records("conv", "autoencoder", "all", [0.95]), *_records("pca-32", "baseline", "all", [0.94]),
    ]
    ver = {(v["method"], v["baseline"], v["budget"]): v for v in _board(records)["verdicts"]}
    noise = ver[("conv", "pca-32", "5/class")]
    assert noise["verdict"] == "within noise" and not noise["beats"] and noise["p_value"] > 0.05
    assert ver[("dense", "pixels", "5/class")]["verdict"] == "wins"
    assert ver[("dense", "pixels", "5/class")]["p_value"] < 0.05
    one = ver[("conv", "pca-32", "all")]
    assert one["verdict"] == "single run" and one["p_value"] is None and not one["beats"]
    md = "\n".join(leaderboard.verdict_section(list(ver.values())))
    assert leaderboard.RULE in md and "paired t-test" in md and "alpha = 0.05" in md
    # wins: dense vs both baselines, conv vs pixels
    assert "3 wins, 0 losses, 1 within noise, 1 single run (no verdict)" in md
    assert "| conv | pca-32 | all | 0.9500 | 0.9400 | +0.0100 | 1 |  | one run: no verdict |" in md
    leaderboard.print_board(_board(records))
    printed = capsys.readouterr().out
    assert "3 wins, 0 losses, 1 within noise, 1 single run" in printed
    assert "dense beats pixels on digits at 5/class: 0.8590 vs 0.8287" in printed
    assert "paired t-test over 3 seeds)" in printed and "over 1 seeds" not in printed
    assert leaderboard.test_name(1) == "McNemar's test on the test images"  # 'p = 1e-21 over 1 seeds'
    assert "conv beats pca-32" not in printed and "autoencoder wins" not in printed


def test_benchmark_output_is_readable_verdicts_ticks_losses_and_headers(tmp_path, capsys, monkeypatch):
    import re

    from aevision.report import classification

    ticks = {}

    def keep_ticks(fig, path):
        ticks[path.name] = [t.get_text() for t in fig.axes[0].get_xticklabels()]
        fig.clf()

    monkeypatch.setattr(classification, "_figure_to_png", keep_ticks)
    monkeypatch.setenv("COLUMNS", "80")
    assert main([*TINY, "imbalance.ratio=5", "imbalance.models=[tiny]", "imbalance.protocols=[linear]",
                 "imbalance.seeds=1", "--labels", "5,all", "--seeds", "2", "-o", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    md = (tmp_path / "leaderboard.md").read_text()
    # wins are counted only beyond the noise: of the seeds, or of the test images for the single
    # run at `all` (McNemar's test on the images both classified)
    assert "paired t-test over the seeds" in md and "McNemar" in md and "one run: no verdict" not in md
    assert "autoencoders vs pixels, PCA and their untrained encoders, linear probe:" in printed
    assert "0 single runs (no verdict)" in printed
    # the `all` budget is plotted where its labels per class put it, and its tick says so
    five, every = ticks["accuracy_vs_labels_linear.png"]
    assert five == "5" and every.startswith("all")
    # losses with 4 significant digits, not 16
    recon = re.search(r"val recon (\S+)", printed).group(1)
    assert len(recon.lstrip("0.").replace(".", "").split("e")[0]) <= 4, recon
    assert re.search(r"\| tiny \| \d+ \| [^|]+ \| [^|]+ \| [^|]+ \| \d\.\d{3}", md)  # the Pretraining table
    # no header or name cut short on an 80-column terminal
    assert "…" not in printed and "weighted" in printed and "long-tailed" in printed


def test_a_table_on_a_narrow_terminal_wraps_but_never_cuts_a_header_or_a_name(capsys, monkeypatch):
    from aevision.report.table import print_table

    monkeypatch.setenv("COLUMNS", "80")
    header = ["method", "protocol", "plain CE", "class-weighted", "gain", "accuracy plain",
              "accuracy weighted"]
    cells = ["0.8382 ± 0.0148", "0.8374 ± 0.0111", "+0.0008", "0.8382 ± 0.0148", "0.8374 ± 0.0111"]
    rows = [["conv", "linear", *cells], ["scratch:conv", "finetune", *cells]]
    for head in (header, [*header[:3], "weighted CE", *header[4:]]):
        print_table("long-tailed", head, rows, [(0, 2)])
        printed = capsys.readouterr().out
        assert "…" not in printed and "0.0148" in printed
        if head[3] == "weighted CE":  # the leaderboard's header: every word whole on 80 columns
            assert all(w in printed for h in head for w in h.split()) and "scratch:conv" in printed
            assert max(len(line) for line in printed.splitlines()) <= 80
