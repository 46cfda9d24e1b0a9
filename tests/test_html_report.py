"""``aevision report``: one self-contained HTML page per run or benchmark folder, checked as text
here and in a real browser (headless Chromium) at the end of the file."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch

from aevision.benchmark import load_benchmark, run_benchmark
from aevision.cli import main
from aevision.report.html import Section, data_uri, figure, page, table
from aevision.report.keypoints import draw_keypoints, save_strip
from aevision.report.masks import example_sheet, save_overlay
from aevision.tasks.html_report import build_report, write_report
from aevision.tasks.pretrain import pretrain
from conftest import tiny_config

PNG = re.compile(r'<img src="data:image/png;base64,')


@pytest.fixture(scope="module")
def benchmark_dir(tmp_path_factory):
    """A real (tiny) benchmark: one autoencoder, pixels and PCA, linear probe and kNN on digits."""
    out = tmp_path_factory.mktemp("bench")
    torch.set_num_threads(1)
    cfg = load_benchmark("quick", [
        f"output_dir={out}", "labels=[5,all]", "seeds=2",
        "baselines=[pixels,pca]", "protocols.finetune.enabled=false", "protocols.finetune.models=null",
        "imbalance.ratio=null", "datasets.0.limit=400",
        "models={dense: {model: {name: dense, code_dim: 16}, train: {epochs: 1, batch_size: 64}}}"])
    run_benchmark(cfg, verbose=False)
    return out


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    """One folder holding what a pretrain run, a segment run, ``keypoints`` and the compression bench
    write (real files from their writers; a tiny real pretraining for the model)."""
    out = tmp_path_factory.mktemp("runs")
    torch.set_num_threads(1)
    pretrain(tiny_config(out, train__epochs=1), overwrite=True)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8, generator=g)
    masks = torch.randint(0, 3, (4, 16, 16), dtype=torch.uint8, generator=g)
    palette = [(0, 0, 0), (200, 0, 0), (0, 200, 0)]
    example_sheet(out / "examples.png", images, masks, masks.flip(2), palette)
    save_overlay(out / "overlays" / "img_<1>.png", images[0], masks[0], palette)
    scores = {"miou": 0.5, "mean_dice": 0.6, "pixel_accuracy": 0.7, "pixels": 1024,
              "iou": {"background": 0.9, "a<b>": 0.3, "c": None}, "dice": {"background": 0.95, "a<b>": 0.4}}
    (out / "metrics.json").write_text(json.dumps({"test": scores, "history": [
        {"epoch": 1, "train_loss": 1.0, "val_loss": 1.2}, {"epoch": 2, "train_loss": 0.5, "val_loss": 0.9}]}))
    frames = torch.rand(6, 1, 8, 8)
    save_strip(out / "sequence0.png", draw_keypoints(frames, torch.rand(6, 2, 2) * 2 - 1))
    (out / "keypoints.json").write_text(json.dumps({"keypoints": 2, "jitter": 0.01,
                                                    "tracking": {"r2": 0.8}, "machine": {"cpu": 2}}))
    curve = [{"bpp": b, "psnr": 20 + 10 * b, "ms_ssim": 0.8 + b / 10} for b in (0.2, 0.5, 1.0)]
    (out / "compression.json").write_text(json.dumps({"kodak": {
        "aevision": [{**p, "weight": 0.01} for p in curve],
        "jpeg": [{**p, "psnr": p["psnr"] - 2} for p in curve], "webp": curve}}))
    return out


# --- the page as text ---------------------------------------------------------------------------


def test_text_is_escaped_and_images_must_be_png():
    html = page("a <b> & c", [Section("s<1>", [table(["<h>"], [["<script>x</script>"]])])])
    assert "<script>" not in html and "&lt;script&gt;x&lt;/script&gt;" in html
    assert "<title>a &lt;b&gt; &amp; c</title>" in html and "s&lt;1&gt;" in html
    with pytest.raises(ValueError, match="not a PNG"):
        data_uri(b"GIF89a...")
    assert '" onerror' not in figure(b"\x89PNG\r\n\x1a\n", 'x" onerror="alert(1)')


def test_a_benchmark_folder_gets_its_leaderboard_verdicts_plots_and_confusions(benchmark_dir):
    html = (benchmark_dir / "report.html").read_text()  # written by the benchmark itself
    assert "http://" not in html and "https://" not in html and "<script" not in html
    board = json.loads((benchmark_dir / "leaderboard.json").read_text())
    for t in board["tables"]:
        assert t["title"] in html
    pixels_all = next(r for r in board["rows"] if r["method"] == "pixels" and r["protocol"] == "linear"
                      and r["budget"] == "all")
    assert f"{pixels_all['accuracy_mean']:.4f}" in html
    verdicts = {v["verdict"] for v in board["verdicts"]}
    assert "Autoencoders vs baselines" in html and verdicts and all(v in html for v in verdicts)
    pngs = [p for p in (benchmark_dir / "digits").rglob("*.png")]
    assert len(PNG.findall(html)) == len(pngs) == 2 + 2 + 2 * 3  # curves, recon + loss, confusions
    report = build_report(benchmark_dir)
    assert report.sections == ["Leaderboard", "Autoencoders vs baselines (linear probe)", "Pretraining",
                               "digits: plots", "digits: confusion matrices"]


def test_a_leaderboard_written_before_it_kept_its_tables_still_gets_one(benchmark_dir, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(benchmark_dir, old)
    board = json.loads((old / "leaderboard.json").read_text())
    for key in ("tables", "folders", "verdict_rule"):
        del board[key]
    (old / "leaderboard.json").write_text(json.dumps(board))
    html = build_report(old).html
    assert "every result" in html and html.count("<tr>") > len(board["rows"])
    assert len(PNG.findall(html)) == 10  # the dataset's folder is still found by its name


def test_run_folders_get_only_the_sections_whose_files_are_there(runs_dir, tmp_path):
    report = write_report(runs_dir, tmp_path / "r.html")
    assert report.sections == ["Pretraining run", "Segmentation", "Keypoints", "Compression: kodak"]
    html = (tmp_path / "r.html").read_text()
    # loss curves + drawn reconstructions; sheet, overlay, loss curves; strip; PSNR and MS-SSIM
    assert report.images == len(PNG.findall(html)) == 2 + 3 + 1 + 2
    assert "a&lt;b&gt;" in html and "img_&lt;1&gt;" in html and "tracking.r2" in html
    assert "machine" not in html.split("Keypoints")[-1].split("Compression")[0]
    (runs_dir / "sequence1.png").write_bytes(b"GIF89a")  # a damaged file: a note, not a crash
    try:
        assert "sequence1.png: not a PNG image, left out" in build_report(runs_dir).html
    finally:
        (runs_dir / "sequence1.png").unlink()
    (runs_dir / "keypoints.json").rename(tmp_path / "k.json")
    try:
        assert "Keypoints" not in build_report(runs_dir).sections
    finally:
        (tmp_path / "k.json").rename(runs_dir / "keypoints.json")


def test_a_model_with_a_smaller_target_gets_every_row_at_the_input_size():
    """The DSAE reproduces a small grey target: its rows are enlarged to fit the grid's input row."""
    from types import SimpleNamespace

    from aevision.tasks.html_report import reconstruction_rows

    small = SimpleNamespace(target=lambda x: x[:, :1, ::4, ::4],
                            reconstruct=lambda x: x[:, :1, ::4, ::4] * 0.5)
    rows = reconstruction_rows(small, torch.rand(3, 3, 16, 16))
    assert list(rows) == ["input", "target", "reconstruction"]
    # enlarged, and grey shown in the input's colours
    assert [tuple(v.shape) for v in rows.values()] == [(3, 3, 16, 16)] * 3
    assert torch.equal(rows["target"][:, 1], rows["target"][:, 0])
    plain = SimpleNamespace(target=None, reconstruct=lambda x: x)
    assert list(reconstruction_rows(plain, torch.rand(2, 1, 8, 8))) == ["input", "reconstruction"]


def test_cli_writes_the_page_and_refuses_what_it_cannot_report(runs_dir, tmp_path, capsys):
    out = tmp_path / "page.html"
    assert main(["report", str(runs_dir), "-o", str(out)]) == 0
    assert out.is_file() and "Segmentation" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "missing")]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert main(["report", str(runs_dir), "-o", str(tmp_path / "page.txt")]) == 2
    err = capsys.readouterr().err
    assert "nothing to report" in err and "not a folder" in err and ".html" in err


# --- the page in a real browser -----------------------------------------------------------------


def find_chromium() -> str | None:
    return shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


def chromium() -> str:
    """Debian's Chromium, or a skip, except in CI, where the browser test must run."""
    path = find_chromium()
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("CI: the browser test needs playwright (pip install -e '.[dev]')")
        pytest.skip("playwright is not installed (pip install -e '.[dev]')")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("CI: no chromium on PATH (.ci/run installs Debian's chromium)")
        pytest.skip("no chromium on PATH (apt-get install chromium)")
    return path


def open_in_browser(executable: str, html: Path, screenshot: Path) -> tuple[list[str], list[int]]:
    """Load ``html`` from disk headless; the console errors and page errors, and every image's
    natural width (0: it did not decode); a full-page screenshot is written."""
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable)
        try:
            tab = browser.new_page(viewport={"width": 1200, "height": 900})
            tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            tab.on("pageerror", lambda e: errors.append(str(e)))
            tab.goto(html.resolve().as_uri(), wait_until="load")
            widths = tab.evaluate("[...document.images].map(i => i.complete ? i.naturalWidth : 0)")
            tab.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return errors, widths


@pytest.mark.parametrize("which", ["benchmark", "runs"])
def test_the_page_loads_in_chromium_without_errors_and_every_image_decodes(
        which, benchmark_dir, runs_dir, tmp_path):
    executable = chromium()
    folder = benchmark_dir if which == "benchmark" else runs_dir
    report = write_report(folder, tmp_path / "report.html")
    errors, widths = open_in_browser(executable, tmp_path / "report.html", tmp_path / "shot.png")
    assert errors == []
    assert len(widths) == report.images > 0 and all(w > 0 for w in widths), widths
    from PIL import Image

    with Image.open(tmp_path / "shot.png") as shot:
        assert shot.width == 1200 and shot.height > 900  # the whole page, longer than one screen


def test_the_browser_check_sees_a_broken_image_and_a_script_error(tmp_path):
    """The check itself can fail: a PNG data URI that does not decode has natural width 0, and an
    error thrown by the page is collected."""
    executable = chromium()
    broken = tmp_path / "broken.html"
    broken.write_text('<!DOCTYPE html><html><body><img src="data:image/png;base64,iVBORw0KGgo=">'
                      "<script>throw new Error('boom')</script></body></html>")
    errors, widths = open_in_browser(executable, broken, tmp_path / "b.png")
    assert widths == [0] and any("boom" in e for e in errors)


def test_without_chromium_the_browser_test_skips_except_in_ci(monkeypatch):
    monkeypatch.setitem(globals(), "find_chromium", lambda: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"no chromium|playwright"):
        chromium()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI"):
        chromium()


def test_a_restore_folder_gets_its_scores_before_and_after_and_the_grid(tmp_path):
    """'restore --simulate' writes metrics.json and grid.png: the report found nothing to report."""
    import numpy as np
    from PIL import Image

    from aevision.models import build_model, save_model

    save_model(build_model("conv", (1, 16, 16), {"code_dim": None, "channels": [4, 8]}), tmp_path / "m")
    (tmp_path / "in").mkdir()
    for i in range(3):
        Image.fromarray(np.full((16, 16), 80 * i + 10, dtype=np.uint8)).save(tmp_path / "in" / f"p<{i}>.png")
    assert main(["restore", str(tmp_path / "m"), str(tmp_path / "in"), "--task", "denoise",
                 "--simulate", "gaussian:sigma=0.2", "-o", str(tmp_path / "out")]) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    report = build_report(tmp_path / "out")
    assert report.sections == ["Restoration"] and report.images == 1  # the grid
    html = report.html
    assert "gaussian sigma 0.2" in html.replace(",", "") and "p&lt;2&gt;.png" in html
    assert f"{metrics['images'][1]['psnr_restored']:.4g}"[:5] in html
    assert "not trained to restore" in html  # the model's note, as restore printed it
