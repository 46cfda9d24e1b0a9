"""``aevision report DIR``: one self-contained HTML page of what a run or benchmark folder holds.

The folder's files decide the sections; a section appears only when its data is there:

- ``leaderboard.json`` (a benchmark, the demo): the leaderboard tables (mean +- std over seeds, the
  best of each column in bold), the verdicts against pixels and PCA, pretraining times, and per
  dataset the accuracy-vs-labels plots, reconstructions, loss curves and confusion matrices;
- ``summary.json`` (``pretrain``): the model, its loss curves (drawn from the history) and a
  ``reconstructions.png`` when there is one;
- ``metrics.json`` (``segment``): test scores, per-class IoU, loss curves, the example sheet and
  overlays; (``restore --simulate``): PSNR and SSIM before and after, per image, and the grid;
- ``keypoints.json`` (``keypoints``): its scores and the keypoint strips;
- ``compression.json`` (``bench/compression.py``): rate-distortion curves against JPEG and WebP.

Images are embedded as PNG ``data:`` URIs (report/html.py), so the page opens anywhere, offline.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aevision.errors import AevisionError
from aevision.io import read_json, write_text
from aevision.report.html import Section, figure, heading, page, paragraph, table

REPORT = "report.html"
KNOWN = ("leaderboard.json", "summary.json", "metrics.json", "keypoints.json", "compression.json")
MAX_OVERLAYS = 12
MAX_CONFUSIONS = 60
MAX_IMAGE_ROWS = 60  # per-image scores shown in a table
PROTOCOLS = ("linear", "knn", "finetune")  # the leaderboard's order


@dataclass
class HtmlReport:
    """The page and what went into it (section titles, embedded images)."""

    html: str
    sections: list[str]
    images: int
    path: Path | None = None


def build_report(folder: str | os.PathLike[str]) -> HtmlReport:
    """The page for ``folder`` (a benchmark output folder or a run folder), not written."""
    root = Path(folder)
    if not root.is_dir():
        raise AevisionError(f"{root}: not a folder (give a run or benchmark output folder)")
    sections: list[Section] = []
    for make in (benchmark_sections, pretrain_sections, segment_sections, restore_sections,
                 keypoint_sections, compression_sections):
        sections += make(root)
    if not sections:
        raise AevisionError(f"{root}: nothing to report (expected one of {', '.join(KNOWN)})")
    html = page(f"aevision report: {root.resolve().name}", sections,
                [paragraph(f"Folder: {root.resolve()}", note=True)])
    return HtmlReport(html, [s.title for s in sections], html.count('<img src="data:image/png'))


def write_report(folder: str | os.PathLike[str], out: str | os.PathLike[str] | None = None) -> HtmlReport:
    """Build the page for ``folder`` and write it to ``out`` (default ``folder/report.html``)."""
    report = build_report(folder)
    report.path = Path(out) if out is not None else Path(folder) / REPORT
    write_text(report.path, report.html)
    return report


# --- helpers --------------------------------------------------------------------------------

def png(path: Path, caption: str, thumb: bool = False) -> str:
    """A PNG file of the folder as a figure; a file that is not a PNG becomes a note instead (the
    page stays whole, and says what is missing)."""
    try:
        return figure(path.read_bytes(), caption, thumb)
    except ValueError:
        return paragraph(f"{path.name}: not a PNG image, left out", note=True)


def drawn(draw: Callable[..., None], *args: Any, **kwargs: Any) -> bytes:
    """PNG bytes of a plot function of report/ that writes to a path (drawn in a scratch folder)."""
    with tempfile.TemporaryDirectory(prefix="aevision-report-") as tmp:
        path = Path(tmp) / "figure.png"
        draw(path, *args, **kwargs)
        return path.read_bytes()


def loss_figure(history: list[dict[str, Any]], name: str) -> str | None:
    """Loss curves of one run's per-epoch history (reconstruction terms, else the loss)."""
    from aevision.report.plots import loss_curves

    for keys in (("train_recon", "val_recon"), ("train_loss", "val_loss")):
        if any(h.get(k) is not None for h in history for k in keys):
            return figure(drawn(loss_curves, {name: history}, keys),
                          f"{name}: {' and '.join(keys)} per epoch")
    return None


def scalars(values: dict[str, Any], prefix: str = "") -> list[list[Any]]:
    """(name, value) rows of the numbers and strings in a nested dict (lists left out)."""
    rows: list[list[Any]] = []
    for k, v in values.items():
        if isinstance(v, dict):
            rows += scalars(v, f"{prefix}{k}.")
        elif isinstance(v, int | float | str) and not isinstance(v, bool):
            rows.append([f"{prefix}{k}", v])
    return rows


def read(path: Path) -> dict[str, Any] | None:
    """A JSON object from the folder, None when the file is absent or holds something else."""
    if not path.is_file():
        return None
    data = read_json(path, path.name)
    return data if isinstance(data, dict) else None


# --- a benchmark ------------------------------------------------------------------------------

def benchmark_sections(root: Path) -> list[Section]:
    board = read(root / "leaderboard.json")
    if board is None or "rows" not in board:
        return []
    run = board.get("run") or {}
    cpus = (run.get("machine") or {}).get("cpu_count")
    intro = [paragraph(f"Benchmark {board.get('name', '')}: {len(board.get('records', []))} runs, "
                       f"{run.get('wall_seconds', 0):.0f}s wall{f' on {cpus} CPUs' if cpus else ''}. "
                       "Test accuracy, mean ± sample std over seeds; the test split was used for no "
                       "choice.")]
    if run.get("command"):
        intro.append(paragraph(f"Command: {run['command']}", note=True))
    lead = Section("Leaderboard", intro + [b for t in board_tables(board) for b in t])
    out = [lead, *verdict_section(board.get("verdicts") or [], board.get("verdict_rule")),
           *pretraining_section(board.get("datasets") or {})]
    for ds in board.get("datasets") or {}:
        out += dataset_sections(root, ds, board.get("folders") or {})
    return out


def board_tables(board: dict[str, Any]) -> list[list[str]]:
    """The leaderboard's own tables (``leaderboard.json: tables``), the best mean of each column bold."""
    out = []
    for t in board.get("tables") or fallback_tables(board["rows"]):
        best: dict[tuple[int, int], str] = {}
        for c in range(1, len(t["header"])):
            vals = [(lead_number(row[c]), r) for r, row in enumerate(t["rows"])]
            vals = [(v, r) for v, r in vals if v is not None]
            if vals and t["header"][c] not in ("gain", "protocol"):
                best[(max(vals)[1], c)] = "best"
        out.append([heading(t["title"]), table(t["header"], t["rows"], best)])
    return out


def lead_number(cell: Any) -> float | None:
    """The mean of a "0.9123 ± 0.0100" cell."""
    try:
        return float(str(cell).split(" ")[0])
    except ValueError:
        return None


def fallback_tables(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One plain table of every row, for a leaderboard.json written before it kept its tables."""
    body = [[r["method"], r["dataset"], r["protocol"], r["budget"], r.get("loss") or "",
             f"{r['accuracy_mean']:.4f} ± {r['accuracy_std']:.4f}"] for r in rows]
    return [{"title": "every result", "header": ["method", "dataset", "protocol", "budget", "loss",
                                                  "accuracy"], "rows": body}]


def verdict_section(ver: list[dict[str, Any]], rule: str | None) -> list[Section]:
    if not ver:
        return []
    header = ["dataset", "autoencoder", "baseline", "budget", "accuracy", "baseline accuracy",
              "difference", "seeds", "p (t / McNemar)", "verdict"]
    rows = [[v["dataset"], v["method"], v["baseline"], v["budget"], f"{v['accuracy']:.4f}",
             f"{v['baseline_accuracy']:.4f}", f"{v['margin']:+.4f}", v["n_seeds"],
             "" if v["p_value"] is None else f"{v['p_value']:.3g}", v["verdict"]] for v in ver]
    marks = {(i, 9): v["verdict"] for i, v in enumerate(ver) if v["verdict"] in ("wins", "loses")}
    counts = {k: sum(v["verdict"] == k for v in ver) for k in ("wins", "loses", "within noise")}
    blocks = [paragraph(rule.replace("`", ""), note=True)] if rule else []  # Markdown quotes
    blocks += [paragraph(f"{counts['wins']} wins, {counts['loses']} losses, {counts['within noise']} "
                         f"within noise, {len(ver) - sum(counts.values())} without a verdict."),
               table(header, rows, marks)]
    return [Section("Autoencoders vs baselines (linear probe)", blocks)]


def pretraining_section(datasets: dict[str, Any]) -> list[Section]:
    rows = [[ds, name, st.get("epochs"), st.get("wall_seconds"), st.get("images_per_s"),
             st.get("val_recon") if st.get("val_recon") is not None else "", st.get("feature_dim"),
             "yes" if st.get("reused") else "no"]
            for ds, info in datasets.items() for name, st in (info.get("pretraining") or {}).items()]
    if not rows:
        return []
    header = ["dataset", "model", "epochs", "wall s", "images/s", "val recon", "features", "reused"]
    return [Section("Pretraining", [table(header, rows)])]


def dataset_sections(root: Path, dataset: str, board_folders: dict[str, str]) -> list[Section]:
    """Accuracy against labels, reconstructions, loss curves and confusion matrices of one dataset."""
    folder = root / (board_folders.get(dataset) or dataset)

    def order(p: Path) -> tuple[int, str]:
        protocol = p.stem.removeprefix("accuracy_vs_labels_")
        return PROTOCOLS.index(protocol) if protocol in PROTOCOLS else len(PROTOCOLS), protocol

    curves = sorted(folder.glob("accuracy_vs_labels_*.png"), key=order)
    plots = [png(p, f"{dataset}: {p.stem.replace('_', ' ')}") for p in curves]
    plots += [png(folder / f, f"{dataset}: {f[:-4].replace('_', ' ')}")
              for f in ("reconstructions.png", "loss_curves.png") if (folder / f).is_file()]
    out = [Section(f"{dataset}: plots", plots)] if plots else []
    files = sorted((folder / "confusion").glob("*.png"))
    confusions = [paragraph(f"The first {MAX_CONFUSIONS} of {len(files)}; the rest are in "
                            f"{folder / 'confusion'}.", note=True)] if len(files) > MAX_CONFUSIONS else []
    for p in files[:MAX_CONFUSIONS]:
        meta = read(p.with_suffix(".json")) or {}
        confusions.append(png(p, meta.get("title") or p.stem, thumb=True))
    if files:
        out.append(Section(f"{dataset}: confusion matrices", confusions))
    return out


# --- runs -------------------------------------------------------------------------------------

def pretrain_sections(root: Path) -> list[Section]:
    """A ``pretrain`` run: what was trained, its loss curves and its reconstructions."""
    summary = read(root / "summary.json")
    if summary is None or "fit" not in summary:
        return []
    cfg, fit = summary.get("config") or {}, summary["fit"]
    model = cfg.get("model") or {}
    rows = [["model", model.get("name", "")],
            ["regularizers", ", ".join(r.get("name", "") for r in cfg.get("regularizers") or []) or "none"],
            ["data", (cfg.get("data") or {}).get("name", "")],
            ["epochs", len(fit.get("history") or [])], ["best epoch", fit.get("best_epoch")],
            ["best validation loss", fit.get("best_val_loss")],
            ["wall seconds", summary.get("wall_seconds")]]
    blocks = [table(["", "value"], [r for r in rows if r[1] is not None])]
    curve = loss_figure(fit.get("history") or [], model.get("name", "model"))
    blocks += [curve] if curve else []
    blocks += reconstruction_figure(root, cfg)
    return [Section("Pretraining run", blocks)]


def reconstruction_figure(root: Path, cfg: dict[str, Any]) -> list[str]:
    """``reconstructions.png`` when the folder has one, else drawn from the model and the first
    validation (or test, or training) images of its data; a note when the data cannot be loaded."""
    if (root / "reconstructions.png").is_file():
        return [png(root / "reconstructions.png", "reconstructions")]
    from aevision.config import build_config
    from aevision.data import load_dataset
    from aevision.models import load_model
    from aevision.report.plots import labelled_grid

    try:
        pcfg = build_config(base=cfg)
        splits = load_dataset(pcfg.data, pcfg.seed)
        model = load_model(root)
    except AevisionError as e:
        return [paragraph(f"No reconstructions: {e}", note=True)]
    if model.reconstructs != "images":
        return [paragraph(f"No reconstructions: the model reproduces {model.reconstructs}, not images.",
                          note=True)]
    shown = next(s for s in (splits.val, splits.test, splits.train) if s is not None and len(s))
    x = shown.floats(slice(None, 12))
    unit = "images"
    if x.dim() == 5:  # videos (N, T, C, H, W): the model reconstructs frames
        x, unit = x.flatten(0, 1)[:12], "frames"
    rows = reconstruction_rows(model, x)
    caption = f"the first 12 held-out {unit} and their reconstructions"
    if "target" in rows:
        caption += " (the model reproduces a target of the input; small ones enlarged)"
    return [figure(drawn(labelled_grid, rows, "reconstructions"), caption)]


def reconstruction_rows(model: Any, x: Any) -> dict[str, Any]:
    """``x`` (N, C, H, W) in [0, 1], the model's target of it when it has one (the DSAE's small
    grey image), and the reconstruction, each enlarged (nearest) to H x W for one grid."""
    import torch

    from aevision.report.plots import shown_like

    with torch.no_grad():
        rows = {"input": x, **({"target": model.target(x)} if model.target is not None else {}),
                "reconstruction": model.reconstruct(x)}
    return {k: shown_like(v, x) for k, v in rows.items()}


def segment_sections(root: Path) -> list[Section]:
    """A ``segment`` run: test (and validation) scores, per-class IoU, loss curves, examples."""
    metrics = read(root / "metrics.json")
    if metrics is None or "miou" not in (metrics.get("test") or {}):
        return []
    splits = {s: metrics[s] for s in ("test", "val") if metrics.get(s)}
    keys = ("miou", "mean_dice", "pixel_accuracy")
    blocks = [table(["split", "mIoU", "mean Dice", "pixel accuracy"],
                    [[s, *(m.get(k) for k in keys)] for s, m in splits.items()])]
    iou = metrics["test"].get("iou") or {}
    dice = metrics["test"].get("dice") or {}
    blocks.append(table(["class", "test IoU", "test Dice"],
                        [[c, "" if v is None else v, "" if dice.get(c) is None else dice[c]]
                         for c, v in iou.items()]))
    curve = loss_figure(metrics.get("history") or [], "segmenter")
    blocks += [curve] if curve else []
    if (root / "examples.png").is_file():
        blocks.append(png(root / "examples.png", "test images, true masks, predicted overlays"))
    blocks += [png(p, f"overlay: {p.stem}", thumb=True)
               for p in sorted((root / "overlays").glob("*.png"))[:MAX_OVERLAYS]]
    return [Section("Segmentation", blocks)]


def restore_sections(root: Path) -> list[Section]:
    """``aevision restore --simulate``: mean PSNR and SSIM of the degraded and the restored
    images, what the model made worse, each image's scores and the degraded / restored / clean grid."""
    metrics = read(root / "metrics.json")
    if metrics is None or "degradation" not in metrics or not isinstance(metrics.get("mean"), dict):
        return []
    mean, deg = metrics["mean"], metrics.get("degradation") or {}
    blocks = [paragraph(f"{metrics.get('task', 'restore')} with {metrics.get('model')}; inputs degraded by "
                        f"{', '.join(f'{k} {v}' for k, v in deg.items())} (seed {metrics.get('seed')})")]
    blocks.append(table(["measure", "degraded", "restored"],
                        [[k.upper(), mean.get(f"{k}_degraded", ""), mean.get(f"{k}_restored", "")]
                         for k in ("psnr", "ssim") if f"{k}_restored" in mean]))
    if metrics.get("lowered"):
        blocks.append(paragraph(f"The model made the images worse by {' and '.join(metrics['lowered'])}.",
                                note=True))
    if metrics.get("note"):
        blocks.append(paragraph(f"Note: {metrics['note']}", note=True))
    if (root / "grid.png").is_file():
        blocks.append(png(root / "grid.png", "degraded / restored / clean"))
    images = [m for m in metrics.get("images") or [] if isinstance(m, dict)]
    keys = ("psnr_degraded", "psnr_restored", "ssim_degraded", "ssim_restored")
    rows = [[Path(str(m.get("file", ""))).name, *("" if m.get(k) is None else m[k] for k in keys)]
            for m in images[:MAX_IMAGE_ROWS]]
    blocks.append(table(["file", "PSNR degraded", "PSNR restored", "SSIM degraded", "SSIM restored"], rows))
    return [Section("Restoration", blocks)]


def keypoint_sections(root: Path) -> list[Section]:
    """``aevision keypoints`` output: its scores and the strips of the first sequences."""
    metrics = read(root / "keypoints.json")
    if metrics is None:
        return []
    rows = scalars({k: v for k, v in metrics.items() if k != "machine"})
    blocks = [table(["measure", "value"], rows)] if rows else []
    blocks += [png(p, f"keypoints over {p.stem} (frames evenly spaced, fading trails)")
               for p in sorted(root.glob("sequence*.png"))]
    return [Section("Keypoints", blocks)]


def compression_sections(root: Path) -> list[Section]:
    """Rate-distortion curves of the learned codec against JPEG and WebP, per data set."""
    from aevision.report.plots import rate_distortion

    results = read(root / "compression.json")
    if results is None:
        return []
    out = []
    for name, res in results.items():
        if not (isinstance(res, dict) and all(isinstance(res.get(k), list) for k in ("aevision", "jpeg"))):
            continue
        blocks = []
        for metric, label in (("psnr", "PSNR (dB)"), ("ms_ssim", "MS-SSIM")):
            curves = {codec: [(p["bpp"], p[metric]) for p in res.get(key) or [] if p.get(metric) is not None]
                      for codec, key in (("aevision", "aevision"), ("JPEG", "jpeg"), ("WebP", "webp"))}
            blocks.append(figure(drawn(rate_distortion, curves, label, f"{name}: {label} vs rate"),
                                 f"{name}: {label} against bits per pixel"))
        rows = [[p.get("weight", ""), p["bpp"], p.get("psnr", ""), p.get("ms_ssim", "")]
                for p in res["aevision"]]
        blocks.append(table(["rate weight", "bpp", "PSNR", "MS-SSIM"], rows))
        out.append(Section(f"Compression: {name}", blocks))
    return out
