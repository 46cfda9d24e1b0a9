"""Reliability: killed runs resume exactly, memory guards answer, archives and images can't escape."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from aevision.config import DataConfig, TrainConfig
from aevision.data import load_dataset
from aevision.data.archives import safe_extract
from aevision.data.batches import TensorBatches
from aevision.data.folder import load_folder
from aevision.engine import Trainer
from aevision.errors import DataError
from conftest import assert_kill_and_resume_is_exact

RUN = ["--dataset", "shapes", "--model", "conv", "--deterministic", "--no-progress", "--epochs", "4",
       "--batch-size", "16", "data.n_train=320", "data.n_test=0", "data.size=24", "model.channels=[16,32]",
       "model.code_dim=32", "train.checkpoint_every_n_steps=7", "--reg", "denoising:sigma=0.2"]


def _env(tmp_path):
    return {**os.environ, "AEVISION_DATA": str(tmp_path / "data"), "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_gives_the_uninterrupted_weights(tmp_path):
    assert_kill_and_resume_is_exact(RUN, tmp_path, _env(tmp_path), min_step=25, timeout=120)


def test_memory_guard_turns_exhaustion_into_a_failed_allocation(tmp_path):
    """Under the cap, a too-large tensor fails to allocate (and is recognised as out of memory)
    instead of the OOM killer ending the process."""
    code = (
        "import torch\n"
        "from aevision.engine.resources import data_segment_bytes, is_out_of_memory, limit_memory\n"
        "limit_memory((data_segment_bytes() + 300 * 2**20) / 2**30)\n"
        "small = torch.ones(50 * 2**20 // 4)\n"
        "try:\n"
        "    torch.ones(2 * 2**30 // 4)\n"
        "except Exception as e:\n"
        "    print('refused', is_out_of_memory(e))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.stdout.strip() == "refused True", proc.stderr


def test_memory_guard_below_current_use_is_a_one_line_error(tmp_path):
    cmd = [sys.executable, "-m", "aevision", "pretrain", "--dataset", "digits", "--model", "dense",
           "--epochs", "1", "--max-memory", "0.05", "--no-progress", "-o", str(tmp_path / "run")]
    proc = subprocess.run(cmd, env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.startswith("aevision: error: train.max_memory_gb: got 0.05, but this process")
    assert len(proc.stderr.strip().splitlines()) == 1


class PicksyModule(nn.Module):
    """Raises CUDA-style out-of-memory for batches larger than ``fits``."""

    def __init__(self, fits: int):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.fits = fits

    def forward(self, x):
        if x.shape[0] > self.fits:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        y = self.lin(x.flatten(1))
        loss = (y - x.flatten(1)).pow(2).mean()
        return {"loss": loss, "recon": loss}


def test_auto_batch_size_halves_until_a_step_fits(tmp_path, caplog):
    data = TensorBatches(torch.randint(0, 255, (200, 1, 2, 2), dtype=torch.uint8), 64, seed=0)
    cfg = TrainConfig(epochs=1, progress=False, accelerator="cpu", auto_batch_size=True)
    result = Trainer(cfg, tmp_path).fit(PicksyModule(fits=20), data, None)
    assert data.batch_size == 16 and result.steps == 13
    assert "train.batch_size 64 does not fit in memory; using 16" in caplog.text


def test_out_of_memory_without_fallback_is_a_clear_error(tmp_path):
    from aevision.errors import AevisionError

    data = TensorBatches(torch.randint(0, 255, (64, 1, 2, 2), dtype=torch.uint8), 32, seed=0)
    cfg = TrainConfig(epochs=1, progress=False, accelerator="cpu")
    with pytest.raises(AevisionError, match=r"out of memory at step 1 \(batch of 32 on cpu\)"):
        Trainer(cfg, tmp_path).fit(PicksyModule(fits=8), data, None)


def test_decompression_bombs_are_skipped(tmp_path, monkeypatch):
    import aevision.data.images as images

    Image.new("L", (40, 40)).save(tmp_path / "big.png")
    Image.new("L", (10, 10)).save(tmp_path / "small.png")
    monkeypatch.setattr(images, "MAX_PIXELS", 1000)
    data = load_folder(tmp_path, image_size=(10, 10))
    assert len(data) == 1
    assert "decompression-bomb" in data.skipped[0].reason


def test_class_folder_with_one_image_still_loads_and_splits(tmp_path):
    for cls, n in (("a", 1), ("b", 5)):
        (tmp_path / cls).mkdir()
        for i in range(n):
            Image.new("L", (6, 6), i * 30).save(tmp_path / cls / f"{i}.png")
    s = load_dataset(DataConfig(name=f"folder:{tmp_path}", val_fraction=0.4), seed=0)
    assert len(s.train) + len(s.val) == 6
    assert (s.train.labels == 0).sum() == 1  # the lone image stays in training


def _tar_with(tmp_path, name, data=b"x", kind=tarfile.REGTYPE, linkname=""):
    path = tmp_path / "evil.tar"
    with tarfile.open(path, "w") as tf:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.linkname = linkname
        info.size = len(data) if kind == tarfile.REGTYPE else 0
        tf.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return path


@pytest.mark.parametrize("name,kind,linkname,why", [
    ("../escape.png", tarfile.REGTYPE, "", "outside"),
    ("/abs/escape.png", tarfile.REGTYPE, "", "absolute"),
    ("link", tarfile.SYMTYPE, "/etc/passwd", "refused"),
    ("link", tarfile.SYMTYPE, "../../outside", "refused"),
    ("dev", tarfile.CHRTYPE, "", "refused"),
])
def test_tar_members_escaping_the_target_are_refused(tmp_path, name, kind, linkname, why):
    archive = _tar_with(tmp_path, name, kind=kind, linkname=linkname)
    target = tmp_path / "out"
    with pytest.raises(DataError, match=why):
        safe_extract(archive, target)
    assert not (tmp_path / "escape.png").exists()


def test_zip_slip_and_zip_symlinks_are_refused(tmp_path):
    z = tmp_path / "evil.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("../../escape.png", b"x")
    with pytest.raises(DataError, match="outside"):
        safe_extract(z, tmp_path / "out")
    z2 = tmp_path / "link.zip"
    with zipfile.ZipFile(z2, "w") as zf:
        info = zipfile.ZipInfo("link")
        info.external_attr = (0o120777 << 16)
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(DataError, match="symbolic link"):
        safe_extract(z2, tmp_path / "out2")


def test_folder_dataset_reads_a_zip_of_class_folders_made_on_any_system(tmp_path):
    z = tmp_path / "pets.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for cls in ("cat", "dog"):
            for i in range(3):
                buf = io.BytesIO()
                Image.fromarray(np.full((5, 5), i * 80, dtype=np.uint8)).save(buf, format="PNG")
                zf.writestr(f"pets/{cls}/{i}.png", buf.getvalue())
                zf.writestr(f"__MACOSX/pets/{cls}/._{i}.png", b"\x00\x05\x16\x07")  # a Mac's zip has these
    s = load_dataset(DataConfig(name=f"folder:{z}", root=str(tmp_path / "root"), val_fraction=0), 0)
    assert s.train.classes == ["cat", "dog"] and len(s.train) == 6
    assert next(iter((tmp_path / "root" / "extracted").iterdir())).name.startswith("pets-")


class _Payload:
    """Unpickling this runs ``touch PWNED``: loading it anywhere would be code execution."""

    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def _evil_pickle() -> bytes:
    import pickle

    return pickle.dumps({"weights": _Payload()})


def test_a_malicious_pickle_in_an_index_folder_is_refused_not_executed(tmp_path, monkeypatch):
    import hashlib
    import json

    from aevision.errors import AevisionError
    from aevision.tasks.retrieval import GalleryIndex

    monkeypatch.chdir(tmp_path)
    x = torch.randn(40, 6)
    folder = GalleryIndex.build(x, labels=torch.arange(40) % 4).save(tmp_path / "idx")
    evil = _evil_pickle()
    # the index file replaced by a pickle, with the description updated to vouch for it
    meta = json.loads((folder / "index.json").read_text())
    (folder / "index.faiss").write_bytes(evil)
    meta["index_sha256"] = hashlib.sha256(evil).hexdigest()
    (folder / "index.json").write_text(json.dumps(meta))
    with pytest.raises(AevisionError, match="not a FAISS index"):
        GalleryIndex.load(folder)
    # the gallery labels replaced by a pickle (a fresh, valid index otherwise)
    folder = GalleryIndex.build(x, labels=torch.arange(40) % 4).save(tmp_path / "idx2")
    (folder / "gallery.safetensors").write_bytes(evil)
    with pytest.raises(AevisionError, match="not a valid safetensors file"):
        GalleryIndex.load(folder)
    assert not (tmp_path / "PWNED").exists()


def test_a_malicious_pickle_as_model_weights_is_refused_not_executed(tmp_path, monkeypatch):
    from aevision import load
    from aevision.errors import AevisionError
    from aevision.models import build_model, save_model

    monkeypatch.chdir(tmp_path)
    save_model(build_model("dense", (1, 8, 8), {"code_dim": 4}), tmp_path / "run")
    (tmp_path / "run" / "model.safetensors").write_bytes(_evil_pickle())
    with pytest.raises(AevisionError, match="not a valid safetensors file"):
        load(tmp_path / "run")
    assert not (tmp_path / "PWNED").exists()
