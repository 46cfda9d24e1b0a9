"""What the data commands do to a user's files, seen from the command line: which files were
skipped, which row of a features file is which image, what was resized, which split was read."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from aevision.cli import main
from aevision.data.splits import limited


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


# --- encode: what each row is, sizes, splits, labels, --limit -------------------------------------


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from aevision.models import build_model, save_model

    return save_model(build_model("dense", (1, 8, 8), {"code_dim": 4}), tmp_path_factory.mktemp("m") / "m")


def rows_of(npy):
    return json.loads(npy.with_suffix(".rows.json").read_text())


def test_encode_refuses_other_sizes_unless_told_how_to_fit_them_and_then_says_what_it_did(
        model, tmp_path, capsys):
    folder = image_folder(tmp_path / "imgs", n=3)
    Image.fromarray(np.full((16, 8), 255, dtype=np.uint8)).save(folder / "img01.png")  # tall, white
    Image.fromarray(np.full((4, 4), 255, dtype=np.uint8)).save(folder / "img02.png")
    out = tmp_path / "f.npy"
    assert main(["encode", str(model), str(folder), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"aevision: error: {folder / 'img01.png'}: a 16x8 image, the model takes 8x8: give "
                   "--resize stretch, crop or pad (stretch changes the aspect ratio, crop cuts the borders, "
                   "pad adds black ones)")
    assert not out.exists()
    for fit, how in (("stretch", "stretched: the aspect ratio changed"),
                     ("crop", "scaled and centre-cropped"), ("pad", "scaled and padded with black borders")):
        assert main(["encode", str(model), str(folder), "-o", str(out), "--resize", fit]) == 0
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"resized 2 of 3 images to 8x8 ({how}) from 16x8 (1), 4x4 (1)"]
        assert rows_of(out)["resized"] == {"to": [8, 8], "fit": fit, "from": {"16x8": 1, "4x4": 1}}
    # what each fit does to the tall white image
    from aevision.data.inputs import file_inputs

    tall = {fit: file_inputs([folder / "img01.png"], 1, (8, 8), fit=fit).data.images[0, 0]
            for fit in ("stretch", "crop", "pad")}
    assert (tall["stretch"] == 255).all() and (tall["crop"] == 255).all()
    assert (tall["pad"][:, :2] == 0).all() and (tall["pad"][:, 2:6] == 255).all()  # 8x4 in the middle
    assert main(["encode", str(model), str(folder / "img00.png"), "-o", str(out)]) == 0
    assert capsys.readouterr().err == ""  # nothing resized, nothing said
    assert main(["encode", str(model), "--dataset", "digits", "--resize", "crop", "-o", str(out)]) == 2
    assert "--resize: got 'crop', expected no --resize with --dataset" in capsys.readouterr().err


def test_encode_writes_which_file_each_row_is_and_keeps_a_folders_labels(model, tmp_path, capsys):
    folder = image_folder(tmp_path / "imgs", n=6, labelled=True, corrupt="a/img01.png")
    out = tmp_path / "f.npy"
    assert main(["encode", str(model), str(folder), "-o", str(out)]) == 0
    assert f"(rows: {tmp_path / 'f.rows.json'})" in capsys.readouterr().out
    rows = rows_of(out)
    files = [str(folder / c / f"img{i:02d}.png") for c, i in (("a", 0), ("a", 2), ("a", 4),
                                                                ("b", 1), ("b", 3), ("b", 5))]
    assert rows["files"] == files and rows["rows"] == len(np.load(out)) == 6
    assert rows["classes"] == ["a", "b"] and rows["labels"] == [0, 0, 0, 1, 1, 1]
    assert [s["path"] for s in rows["skipped"]] == [str(folder / "a" / "img01.png")]
    st = tmp_path / "f.safetensors"
    assert main(["encode", str(model), str(folder), "-o", str(st)]) == 0
    from safetensors import safe_open

    with safe_open(st, "numpy") as f:
        meta = f.metadata()
        assert f.get_tensor("labels").tolist() == [0, 0, 0, 1, 1, 1]
        np.testing.assert_allclose(f.get_tensor("features"), np.load(out), rtol=1e-6)
    assert json.loads(meta["files"]) == files and json.loads(meta["classes"]) == ["a", "b"]
    assert json.loads(meta["skipped"])[0]["path"].endswith("img01.png")


def test_encode_a_dataset_records_indices_and_every_split_is_reachable(model, tmp_path, capsys):
    def encode(*argv):
        out = tmp_path / "f.npy"
        assert main(["encode", str(model), "--dataset", "digits", *argv, "-o", str(out)]) == 0
        return np.load(out), rows_of(out)

    everything, rows = encode("--split", "all")
    assert len(everything) == 1797 and rows["indices"] == list(range(1797)) and rows["split"] == "all"
    assert rows["dataset"] == "digits" and len(rows["labels"]) == 1797
    seen = []
    for split in ("train", "val", "test"):
        feats, rows = encode("--split", split)
        assert rows["split"] == split and len(rows["indices"]) == len(feats)
        np.testing.assert_allclose(feats, everything[rows["indices"]], rtol=1e-6)
        seen += rows["indices"]
    assert sorted(seen) == list(range(1797))  # train + val + test = all, no image twice
    feats, rows = encode("--split", "test", "--limit", "5")  # 5 test images drawn with --seed, in order
    assert rows["indices"] == [1797 - 449 + i for i in limited(449, 5, seed=0).tolist()]  # test comes last
    np.testing.assert_allclose(feats, everything[rows["indices"]], rtol=1e-6)


def test_a_labelled_folder_as_a_dataset_says_which_splits_it_has(model, tmp_path, capsys):
    folder = image_folder(tmp_path / "imgs", n=20, labelled=True)
    out = tmp_path / "f.npy"
    assert main(["encode", str(model), "--dataset", f"folder:{folder}", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"aevision: error: --split: got 'test', expected one of train, val, all (dataset "
                   f"'folder:{folder}' has no test split)")
    assert main(["encode", str(model), "--dataset", f"folder:{folder}", "--split", "all",
                 "-o", str(out)]) == 0
    rows = rows_of(out)
    assert len(np.load(out)) == 20 and rows["files"] == sorted(str(p) for p in folder.rglob("*.png"))
    assert rows["labels"] == [0] * 10 + [1] * 10


def test_limit_reads_no_file_past_the_images_it_keeps(model, tmp_path, monkeypatch, capsys):
    import aevision.data.images as images

    folder = image_folder(tmp_path / "imgs", n=8)
    (folder / "img01.png").write_bytes(b"")  # an empty file among the first three
    (folder / "img06.png").write_bytes(b"not an image, and never read")
    opened = []
    real = images.open_image
    monkeypatch.setattr(images, "open_image", lambda p: opened.append(p.name) or real(p))
    out = tmp_path / "f.npy"
    assert main(["encode", str(model), str(folder), "--limit", "3", "-o", str(out)]) == 0
    assert opened == ["img00.png", "img01.png", "img02.png", "img03.png"]
    rows = rows_of(out)
    assert [f[-9:] for f in rows["files"]] == ["img00.png", "img02.png", "img03.png"]
    assert [s["path"][-9:] for s in rows["skipped"]] == ["img01.png"]
