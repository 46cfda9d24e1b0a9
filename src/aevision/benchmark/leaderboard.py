"""The leaderboard: per-seed records -> mean +- std rows, verdicts, Markdown / CSV / JSON, plots.

``records`` hold every number with its config, seed, wall time and images/s (one per protocol
run); ``rows`` aggregate them over seeds (sample standard deviation; 0 for a single run);
``verdicts`` say, for every autoencoder and label budget, whether its linear probe beats raw pixels,
PCA of the same dimension and its own encoder untrained (the ``untrained`` control: what
pretraining itself adds), loses to them, or is within the noise of the seeds (:data:`RULE`), in
words, including where it does not win.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from aevision.benchmark.config import BenchmarkConfig, parse_budget, safe_name
from aevision.io import write_csv_rows, write_json, write_text
from aevision.report.table import markdown_table

PROTOCOL_TITLES = {"linear": "linear probe", "knn": "kNN (cosine, weighted vote)",
                   "finetune": "fine-tuning"}
KEY = ("dataset", "protocol", "imbalance", "loss", "method", "budget")
ALPHA = 0.05
RULE = ("A difference counts as a win or a loss only when it holds across seeds: a two-sided paired "
        f"t-test over the seeds both methods ran (the same labelled subsets), alpha = {ALPHA:g}; "
        "otherwise it is within noise. A budget run once (`all`: every label, a deterministic probe) "
        "is judged on the test images instead: McNemar's exact test on the images one method "
        f"classifies correctly and the other does not, alpha = {ALPHA:g}; a run without per-image "
        "results (an older leaderboard) gets no verdict.")
VERDICT_WORDS = {"wins": "**wins**", "loses": "**loses**", "within noise": "within noise",
                 "single run": "one run: no verdict"}


def _std(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def aggregate(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        groups[tuple(r[k] for k in KEY)].append(r)
    rows = []
    for key, rs in groups.items():
        row: dict[str, Any] = dict(zip(KEY, key, strict=True))
        row["kind"] = rs[0]["kind"]
        row["labels_per_class"] = rs[0]["labels_per_class"]
        row["n_seeds"] = len(rs)
        row["seeds"] = [r["seed"] for r in rs]
        for metric in ("accuracy", "balanced_accuracy", "macro_f1"):
            values = [r[metric] for r in rs]
            row[f"{metric}_mean"] = statistics.fmean(values)
            row[f"{metric}_std"] = _std(values)
            row[f"{metric}_runs"] = values
        # the held-out score that ranks models without test labels (validation split or CV)
        held_out = [v for r in rs if (v := r.get("selection", {}).get("val_score")) is not None]
        row["val_score_mean"] = statistics.fmean(held_out) if held_out else None
        # linear probe runs whose C sits at an end of its grid (the best may lie beyond it)
        row["c_at_edge"] = [{"seed": r["seed"], "C": r["selection"]["C"], "edge": r["selection"]["at_edge"],
                             "grid": r["selection"].get("grid")}
                            for r in rs if r.get("selection", {}).get("at_edge")]
        row["test_correct_runs"] = [r.get("test_correct") for r in rs]  # per seed, for McNemar's test
        row["wall_seconds_mean"] = round(statistics.fmean(r["wall_seconds"] for r in rs), 3)
        speeds = [r["images_per_s"] for r in rs if r["images_per_s"]]
        row["images_per_s_mean"] = round(statistics.fmean(speeds), 1) if speeds else None
        rows.append(row)
    return rows


def verdicts(rows: list[dict[str, Any]], datasets: dict[str, Any]) -> list[dict[str, Any]]:
    """Every autoencoder vs pixels, its matched PCA and its untrained twin, linear probe, every
    budget (balanced data)."""
    out = []
    lin = {(r["dataset"], r["method"], r["budget"]): r for r in rows
           if r["protocol"] == "linear" and r["imbalance"] is None}
    for (ds, method, budget), row in sorted(lin.items(), key=lambda kv: (
            kv[0][0], kv[0][1], _budget_key(kv[0][2]))):
        if row["kind"] != "autoencoder":
            continue
        info = datasets[ds]
        pixels_dim = info["methods"].get("pixels", {}).get("dim")
        dim = info["methods"][method]["dim"]
        pca_dim = min(dim, pixels_dim or dim, info["train"])
        control = info["methods"][method].get("untrained_control", f"untrained:{method}")
        for baseline in ("pixels", f"pca-{pca_dim}", control):
            other = lin.get((ds, baseline, budget))
            if other is None:
                continue
            n, margin, p = paired_test(row, other)
            verdict = ("single run" if p is None else "within noise" if p >= ALPHA
                       else "wins" if margin > 0 else "loses")
            out.append({"dataset": ds, "method": method, "baseline": baseline, "budget": budget,
                        "accuracy": row["accuracy_mean"], "baseline_accuracy": other["accuracy_mean"],
                        "margin": margin, "n_seeds": n, "p_value": p, "verdict": verdict,
                        "beats": verdict == "wins"})
    return out


def correct_bits(pred: Tensor, labels: Tensor) -> str:
    """Which test images a run got right, 8 to a byte, as hex: what McNemar's test pairs up."""
    right = (pred.long().cpu() == labels.long().cpu()).numpy()
    return np.packbits(right).tobytes().hex()


def mcnemar_p(a_bits: str, b_bits: str) -> float:
    """Two-sided exact McNemar p-value of two runs on the same test images (:func:`correct_bits`):
    only the images exactly one of them gets right count; under the null either is as likely."""
    from scipy.stats import binomtest

    a = np.unpackbits(np.frombuffer(bytes.fromhex(a_bits), dtype=np.uint8))
    b = np.unpackbits(np.frombuffer(bytes.fromhex(b_bits), dtype=np.uint8))
    only_a, only_b = int((a & ~b & 1).sum()), int((b & ~a & 1).sum())
    return 1.0 if only_a + only_b == 0 else float(binomtest(only_a, only_a + only_b, 0.5).pvalue)


def _seed_bits(row: dict[str, Any], seed: int) -> str | None:
    """The run of ``seed``'s :func:`correct_bits` (None in rows built before they were recorded)."""
    bits = row.get("test_correct_runs")
    return bits[row["seeds"].index(seed)] if bits else None


def test_name(n_seeds: int) -> str:
    """Which test gave a verdict's p-value: the paired t-test over seeds, McNemar's for one run."""
    return "McNemar's test on the test images" if n_seeds == 1 else f"paired t-test over {n_seeds} seeds"


def paired_test(a: dict[str, Any], b: dict[str, Any]) -> tuple[int, float, float | None]:
    """Two aggregated rows compared seed by seed (the same seed: the same labelled subset): the
    number of shared seeds, the mean difference a - b (of the means when no seed is shared), and the
    two-sided paired t-test's p-value; with one shared seed, McNemar's test on the test images
    (None when a run lacks per-image results, or no seed is shared)."""
    from scipy.stats import t as student_t

    runs_a = dict(zip(a["seeds"], a["accuracy_runs"], strict=True))
    runs_b = dict(zip(b["seeds"], b["accuracy_runs"], strict=True))
    shared = sorted(set(runs_a) & set(runs_b))
    diffs = [runs_a[s] - runs_b[s] for s in shared]
    n = len(diffs)
    if n == 1:
        one_a, one_b = _seed_bits(a, shared[0]), _seed_bits(b, shared[0])
        return 1, diffs[0], mcnemar_p(one_a, one_b) if one_a and one_b else None
    if n < 2:
        return n, a["accuracy_mean"] - b["accuracy_mean"], None
    mean, sd = statistics.fmean(diffs), statistics.stdev(diffs)
    if sd == 0:  # the same difference on every seed
        return n, mean, 1.0 if mean == 0 else 0.0
    return n, mean, float(2 * student_t.sf(abs(mean) / (sd / math.sqrt(n)), n - 1))


def build(cfg: BenchmarkConfig, records: list[dict[str, Any]], datasets: dict[str, Any],
          run: dict[str, Any]) -> dict[str, Any]:
    """What leaderboard.json holds; ``tables``, ``verdict_rule`` and ``folders`` (each dataset's
    figures) are there for readers that do not import the benchmark (``aevision report``)."""
    rows = aggregate(records)
    board = {"name": cfg.name, "config": cfg.to_dict(), "run": run, "datasets": datasets,
             "rows": rows, "verdicts": verdicts(rows, datasets), "verdict_rule": RULE,
             "folders": {ds: safe_name(ds) for ds in datasets}, "records": records}
    board["tables"] = [{"title": t, "header": h, "rows": b} for t, h, b in tables(board)]
    return board


def _cell(row: dict[str, Any] | None, metric: str = "accuracy") -> str:
    if row is None:
        return ""
    mean, std = row[f"{metric}_mean"], row[f"{metric}_std"]
    n = row["n_seeds"]
    return f"{mean:.4f} ± {std:.4f}" if n > 1 else f"{mean:.4f}"


def _budget_key(name: str) -> float:
    """Sort key of a budget's display name ("10/class", "100 total", "all")."""
    return parse_budget(name.replace("/class", "").replace(" total", "t")).sort_key()


def _budget_order(budgets: list[str]) -> list[str]:
    return sorted(set(budgets), key=_budget_key)


def tables(board: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) for every table of the leaderboard, in reading order."""
    out = []
    rows = board["rows"]
    for ds in board["datasets"]:
        mine = [r for r in rows if r["dataset"] == ds]
        for protocol, title in PROTOCOL_TITLES.items():
            sel = [r for r in mine if r["protocol"] == protocol and r["imbalance"] is None]
            if not sel:
                continue
            budgets = _budget_order([r["budget"] for r in sel])
            methods = list(dict.fromkeys(r["method"] for r in sel))
            index = {(r["method"], r["budget"]): r for r in sel}
            header = ["method", *budgets]
            body = [[m, *(_cell(index.get((m, b))) for b in budgets)] for m in methods]
            held_out = {m: index[(m, "all")]["val_score_mean"] for m in methods if (m, "all") in index}
            if any(v is not None for v in held_out.values()):
                header.append("validation (all)")
                for m, line in zip(methods, body, strict=True):
                    val = held_out.get(m)
                    line.append("" if val is None else f"{val:.4f}")
            out.append((f"{ds}: {title}, test accuracy (mean ± std over seeds)", header, body))
        imb = [r for r in mine if r["imbalance"] is not None]
        if imb:
            ratio = imb[0]["imbalance"]
            index = defaultdict(dict)
            for r in imb:
                index[(r["method"], r["protocol"])][r["loss"]] = r
            header = ["method", "protocol", "plain CE", "weighted CE", "gain", "accuracy plain",
                      "accuracy weighted"]
            body = []
            for (m, p), by_loss in index.items():
                plain = by_loss.get("plain")
                weighted = next((v for k, v in by_loss.items() if k != "plain"), None)
                gain = (f"{weighted['balanced_accuracy_mean'] - plain['balanced_accuracy_mean']:+.4f}"
                        if plain and weighted else "")
                body.append([m, p, _cell(plain, "balanced_accuracy"), _cell(weighted, "balanced_accuracy"),
                             gain, _cell(plain), _cell(weighted)])
            out.append((f"{ds}: long-tailed training set 1:{ratio:g}, balanced test accuracy",
                        header, body))
    return out


def edge_notes(board: dict[str, Any]) -> list[str]:
    """One line per result whose linear probe chose C at an end of its grid, in some run."""
    out = []
    for r in board["rows"]:
        if not r.get("c_at_edge"):
            continue
        e = r["c_at_edge"]
        grid = f" of {e[0]['grid'][0]:g} .. {e[0]['grid'][1]:g}" if e[0].get("grid") else ""
        imb = f", long-tailed 1:{r['imbalance']:g}, {r['loss']}" if r["imbalance"] is not None else ""
        cs = ", ".join(sorted({f"{x['C']:g}" for x in e}))
        out.append(f"{r['method']} on {r['dataset']} at {r['budget']}{imb}: C = {cs}, the "
                   f"{'/'.join(sorted({x['edge'] for x in e}))} end of the grid{grid}, in "
                   f"{len(e)} of {r['n_seeds']} runs")
    return out


def markdown(board: dict[str, Any]) -> str:
    run = board["run"]
    lines = [f"# Leaderboard: {board['name']}\n",
             "Test split never used for any choice: C and fine-tuning epochs are chosen on the "
             "validation split (budget `all`) or inside the labelled subset (smaller budgets). "
             "`N/class` = N labelled images per class; mean ± sample std over seeds (one number "
             "for a single run, e.g. the probe with all labels, which is deterministic). "
             "`validation (all)`: held-out accuracy with all labels (on the validation split, or "
             "by CV inside the training labels when there is none), the score that picks the best "
             "autoencoder.\n",
             f"Run: {run['wall_seconds']:.0f}s wall on {run['machine']['cpu_count']} CPUs "
             f"({run['machine']['torch_threads']} torch threads); load average "
             f"{run['load_average_start'][0]} -> {run['load_average_end'][0]} (the machine may be "
             f"shared: timings are indicative).\n"]
    reused = sum(bool(r.get("reused")) for r in board["records"])
    if reused:
        lines.append(f"{reused} of {len(board['records'])} runs were read back from an earlier run with "
                     f"identical inputs (`--resume`); their times are that run's.\n")
    for title, header, body in tables(board):
        lines += [f"## {title}\n", markdown_table(header, body)]
    edges = edge_notes(board)
    if edges:
        lines.append("## Linear probe: C at an edge of its grid\n")
        lines.append("The held-out score chose the strongest or the weakest regularisation tried, so "
                     "the best C may lie beyond the grid (`protocols.linear.c_grid`): these results "
                     "may understate the method.\n")
        lines += [*(f"- {e}" for e in edges), ""]
    lines += verdict_section(board["verdicts"])
    lines.append("## Pretraining\n")
    header = ["dataset", "model", "epochs", "wall s", "CPU s", "images/s", "val recon", "features",
              "reused"]
    body = []
    for ds, info in board["datasets"].items():
        for name, st in info["pretraining"].items():
            body.append([ds, name, st["epochs"], st["wall_seconds"], st["cpu_seconds"],
                         st["images_per_s"], f"{st['val_recon']:.4g}" if st.get("val_recon") else "",
                         st.get("feature_dim"), "yes" if st["reused"] else "no"])
    lines.append(markdown_table(header, body))
    for ds in board["datasets"]:
        d = safe_name(ds)
        for p in PROTOCOL_TITLES:
            if any(r["dataset"] == ds and r["protocol"] == p for r in board["rows"]):
                lines.append(f"![{ds} {p}]({d}/accuracy_vs_labels_{p}.png)")
    lines.append("")
    return "\n".join(lines)


def verdict_counts(ver: list[dict[str, Any]]) -> str:
    """"2 wins, 1 loss, 20 within noise, 10 single runs (no verdict)"."""
    n = {k: sum(v["verdict"] == k for v in ver) for k in VERDICT_WORDS}
    return (f"{n['wins']} win{'s' * (n['wins'] != 1)}, {n['loses']} loss{'es' * (n['loses'] != 1)}, "
            f"{n['within noise']} within noise, {n['single run']} single "
            f"run{'s' * (n['single run'] != 1)} (no verdict)")


def verdict_section(ver: list[dict[str, Any]]) -> list[str]:
    """Markdown: the rule, then every autoencoder vs baseline comparison with its verdict."""
    if not ver:
        return []
    several = len({v["dataset"] for v in ver}) > 1
    header = [*(["dataset"] if several else []), "autoencoder", "baseline", "budget", "accuracy",
              "baseline accuracy", "difference", "seeds", "p (t / McNemar)", "verdict"]
    body = [[*([v["dataset"]] if several else []), v["method"], v["baseline"], v["budget"],
             f"{v['accuracy']:.4f}", f"{v['baseline_accuracy']:.4f}", f"{v['margin']:+.4f}", v["n_seeds"],
             "" if v["p_value"] is None else f"{v['p_value']:.3g}", VERDICT_WORDS[v["verdict"]]]
            for v in ver]
    return ["## Autoencoders vs baselines (linear probe)\n",
            "Baselines: raw pixels, PCA of the autoencoder's feature dimension (a projection: the probe "
            "keeps its components' variances), and `untrained:NAME`, "
            "the autoencoder's own encoder with random weights under the same features and probe "
            "(what pretraining itself adds).\n",
            f"{RULE}\n", f"{verdict_counts(ver)}.\n",
            markdown_table(header, body)]


def csv_rows(board: dict[str, Any]) -> list[dict[str, Any]]:
    """One line per run (seed): every number with its config, seed, wall time and images/s."""
    cols = ("dataset", "method", "kind", "protocol", "budget", "labels", "imbalance", "loss", "seed",
            "accuracy", "balanced_accuracy", "macro_f1", "wall_seconds", "images_per_s")
    return [{**{c: r[c] for c in cols}, "selection": json.dumps(r["selection"], sort_keys=True),
             "config": json.dumps(r["config"], sort_keys=True)} for r in board["records"]]


def write(out: Path, board: dict[str, Any]) -> None:
    from aevision.report.classification import accuracy_vs_labels

    write_json(out / "leaderboard.json", board)
    write_csv_rows(out / "leaderboard.csv", csv_rows(board))
    write_text(out / "leaderboard.md", markdown(board))
    for ds in board["datasets"]:
        for protocol, title in PROTOCOL_TITLES.items():
            sel = [r for r in board["rows"] if r["dataset"] == ds and r["protocol"] == protocol
                   and r["imbalance"] is None]
            if not sel:
                continue
            curves: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
            ticks: dict[float, str] = {}
            for r in sel:
                curves[r["method"]].append((r["labels_per_class"], r["accuracy_mean"],
                                            r["accuracy_std"]))
                ticks[r["labels_per_class"]] = r["budget"].replace("/class", "")
            accuracy_vs_labels(out / safe_name(ds) / f"accuracy_vs_labels_{protocol}.png", curves,
                               f"{ds}: {title}", ticks=ticks)


def print_board(board: dict[str, Any]) -> None:
    from aevision.report.table import print_table

    for title, header, body in tables(board):
        best = []
        for c in range(1, len(header)):
            vals = [(float(row[c].split(" ")[0]), i) for i, row in enumerate(body)
                    if row[c] and row[c][0].isdigit()]
            if vals and header[c] not in ("gain", "protocol"):
                best.append((max(vals)[1], c))
        print_table(title, header, body, best)
    for e in edge_notes(board):
        print(f"linear probe C at an edge of its grid (widen protocols.linear.c_grid): {e}")
    ver = board["verdicts"]
    if ver:
        print(f"autoencoders vs pixels, PCA and their untrained encoders, linear probe: "
              f"{verdict_counts(ver)}; a win or a loss "
              f"needs a paired t-test over the seeds (McNemar's test on the test images for a single run) "
              f"at alpha {ALPHA:g}, else it is within noise")
        for v in ver:
            if v["verdict"] in ("wins", "loses"):
                print(f"  {v['method']} {'beats' if v['beats'] else 'loses to'} {v['baseline']} on "
                      f"{v['dataset']} at {v['budget']}: {v['accuracy']:.4f} vs {v['baseline_accuracy']:.4f} "
                      f"({v['margin']:+.4f}, p = {v['p_value']:.3g}, {test_name(v['n_seeds'])})")
