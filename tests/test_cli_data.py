"""What the data commands do to a user's files, seen from the command line: which files were
skipped, which row of a features file is which image, what was resized, which split was read."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from aevision.cli import main


def image_folder(root, n=12, size=(8, 8), labelled=False, corrupt=None):
    """``n`` small grey PNGs (in class folders ``a``/``b`` when ``labelled``); ``corrupt``: the name
    of a file with a PNG suffix that is not an image."""
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / ("ab"[i % 2] if labelled else "")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, size, dtype=np.uint8)).save(folder / f"img{i:02d}.png")
    if corrupt:
        (root / corrupt).parent.mkdir(parents=True, exist_ok=True)
        (root / corrupt).write_bytes(b"\x89PNG not really")
    return root


@pytest.mark.parametrize("val_fraction", ["0.25", "0"])
def test_pretrain_summary_lists_the_skipped_file_with_or_without_a_validation_split(tmp_path, val_fraction):
    data = image_folder(tmp_path / "imgs", corrupt="broken.png")
    out = tmp_path / "run"
    assert main(["pretrain", "--model", "dense", "--dataset", f"folder:{data}", "--epochs", "1",
                 "--batch-size", "4", "--no-progress", "model.code_dim=4",
                 f"data.val_fraction={val_fraction}", "-o", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["data"]["val"] is None or summary["data"]["val"]["images"] == 3
    skipped = summary["data"]["skipped_files"]
    assert [s["path"] for s in skipped] == [str(data / "broken.png")]
    assert "not an image" in skipped[0]["reason"]

