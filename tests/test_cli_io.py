"""What a new user met at the edges of the command line (issue 34): the modes of the files it
writes, one-line errors for what the user can fix, no third-party chatter, and wording."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aevision.cli import main


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """An (untrained) 8x8 grey model folder and a folder of three images for it."""
    from aevision.models import build_model, save_model

    root = tmp_path_factory.mktemp("m")
    save_model(build_model("dense", (1, 8, 8), {"code_dim": 4}), root / "m")
    (root / "imgs").mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 8), 60 * i, dtype=np.uint8)).save(root / "imgs" / f"{i}.png")
    return root / "m"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_written_files_have_the_mode_plain_open_gives(model, tmp_path):
    # atomic writes went through tempfile.mkstemp: every result was 0600 whatever the umask
    script = ("import sys; from aevision.cli import main; from aevision.io import write_json; "
              "m, imgs, out = sys.argv[1:]; "
              "assert main(['encode', m, imgs, '-o', out + '/f.npy']) == 0; "
              "assert main(['reconstruct', m, imgs, '-o', out + '/g.png']) == 0; "
              "write_json(out + '/x.json', {'a': 1})")
    proc = subprocess.run([sys.executable, "-c", script, str(model), str(model.parent / "imgs"),
                           str(tmp_path)], capture_output=True, text=True, preexec_fn=lambda: os.umask(0o022))
    assert proc.returncode == 0, proc.stderr
    for name in ("f.npy", "g.png", "x.json"):
        assert mode(tmp_path / name) == 0o644, name
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left


def test_atomic_writes_follow_the_umask_in_process(tmp_path):
    from aevision.io import temp_folder, write_json

    old = os.umask(0o027)
    try:
        write_json(tmp_path / "a.json", [1])
        folder = temp_folder(tmp_path, ".x.")
    finally:
        os.umask(old)
    assert mode(tmp_path / "a.json") == 0o640
    assert mode(folder) == 0o750  # unpacked archives: tempfile.mkdtemp made them 0700
