"""What a new user met at the edges of the command line (issue 34): the modes of the files it
writes, one-line errors for what the user can fix, no third-party chatter, and wording."""

from __future__ import annotations

import argparse
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


def subparsers() -> dict[str, argparse.ArgumentParser]:
    from aevision.cli import build_parser

    return next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices


def commands_with(dest: str) -> list[str]:
    """Every command that has the option ``dest``."""
    return [name for name, p in subparsers().items() if any(a.dest == dest for a in p._actions)]


def argv_for(name: str, **given: str) -> list[str]:
    """The command with its required arguments filled in (dummies: nothing runs past the checks),
    and the ``given`` options."""
    argv = [name]
    for a in subparsers()[name]._actions:
        if a.dest in given:
            argv += [a.option_strings[0], given[a.dest]]
        elif a.required:
            value = a.choices[0] if a.choices else "x"
            argv += [a.option_strings[0], value] if a.option_strings else [value]
    return argv


@pytest.mark.parametrize("name", commands_with("device"))
def test_every_device_no_machine_has_is_one_line(name, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(argv_for(name, device="cuda:99", out=str(tmp_path / "o"))) == 2
    err = capsys.readouterr().err
    assert err.startswith("aevision: error: --device cuda:99: this machine has ")
    assert len(err.splitlines()) == 1


def test_cuda_on_a_machine_without_it_and_a_misspelt_device(model, tmp_path, monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    imgs = str(model.parent / "imgs")
    assert main(["encode", str(model), imgs, "-o", str(tmp_path / "f.npy"), "--device", "cuda"]) == 2
    assert capsys.readouterr().err == ("aevision: error: --device cuda: this machine has no CUDA device "
                                       "(use --device cpu)\n")
    assert main(["encode", str(model), imgs, "-o", str(tmp_path / "f.npy"), "--device", "gpu0"]) == 2
    assert "--device: got 'gpu0', expected cpu, cuda, cuda:N or mps" in capsys.readouterr().err


@pytest.mark.parametrize("name", commands_with("out"))
def test_every_output_of_the_wrong_kind_is_one_line(name, tmp_path, monkeypatch, capsys):
    # a file where a folder goes, a folder where a file goes (mkdir d.png; reconstruct -o d.png)
    monkeypatch.chdir(tmp_path)
    folder = subparsers()[name].get_default("outputs")["out"][1]
    (tmp_path / "a.png").mkdir() if not folder else (tmp_path / "a.png").write_text("")
    assert main(argv_for(name, out="a.png")) == 2
    err = capsys.readouterr().err
    expected = "exists and is not a folder" if folder else "is a folder; give a file name"
    assert err == f"aevision: error: -o a.png: {expected}\n"
    if not folder:  # a new folder's name where a file goes: was written as a file of that name
        assert main(argv_for(name, out="new/")) == 2
        assert capsys.readouterr().err == "aevision: error: -o new/: names a folder; give a file name\n"
        assert not (tmp_path / "new").exists()


def test_outputs_where_nothing_can_be_written(model, tmp_path, capsys):
    imgs = str(model.parent / "imgs")
    (tmp_path / "file").write_text("")
    assert main(["reconstruct", str(model), imgs, "-o", str(tmp_path / "file" / "g.png")]) == 2
    assert capsys.readouterr().err.endswith(f"g.png: {tmp_path / 'file'} is not a folder\n")
    assert main(["anomaly", str(model), imgs, "--grid", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"aevision: error: --grid {tmp_path}: is a folder; give a file name\n"
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        assert main(["encode", str(model), imgs, "-o", str(locked / "new" / "f.npy")]) == 2
        assert "cannot write in" in capsys.readouterr().err


def test_what_the_system_refuses_at_write_time_is_one_line(tmp_path):
    from aevision.errors import AevisionError
    from aevision.io import write_json

    (tmp_path / "d.json").mkdir()
    with pytest.raises(AevisionError, match=r"d.json: cannot write \(Is a directory\)"):
        write_json(tmp_path / "d.json", {})
    assert [p.name for p in tmp_path.iterdir()] == ["d.json"]  # the temp file is gone


def test_index_and_search_print_no_faiss_loader_lines(model, tmp_path):
    # FAISS's loader logs 8 INFO lines on import; the CLI's logging showed every library's INFO
    pytest.importorskip("faiss")
    imgs = model.parent / "imgs"
    script = ("import sys; from aevision.cli import main; m, imgs, idx = sys.argv[1:]; "
              "assert main(['index', '-m', m, imgs, '-o', idx]) == 0; "
              "assert main(['search', idx, imgs + '/0.png', '-k', '1']) == 0; "
              "assert main(['search', idx + '-missing', imgs + '/0.png']) == 2")
    proc = subprocess.run([sys.executable, "-c", script, str(model), str(imgs), str(tmp_path / "idx")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "aevision: error: " + str(tmp_path / "idx-missing") + (
        ": no such index folder (make one with 'aevision index')\n")


PRETRAIN = ["pretrain", "--model", "dense", "--dataset", "digits", "--limit", "60", "--batch-size", "64",
            "--reg", "l1:weight=0.01"]


def test_counts_and_lists_are_worded_right(model, tmp_path, capsys):
    # "1 epochs, 1 steps", "(1 images)", "a list of an integers"; the l1 next to the weighted loss
    assert main([*PRETRAIN, "--epochs", "1", "-o", str(tmp_path / "r")]) == 0
    out, err = capsys.readouterr()
    assert ": 1 epoch, 1 step, best val loss" in out
    lines = err.splitlines()
    at = lines.index("(loss is the weighted sum of the terms; l1 is shown unweighted)")
    assert lines[at + 1].startswith("epoch 1/1  loss ") and " l1 " in lines[at + 1]
    assert main(["reconstruct", str(model), str(model.parent / "imgs"), "-n", "1", "-o",
                 str(tmp_path / "g.png")]) == 0
    assert capsys.readouterr().out == f"wrote {tmp_path / 'g.png'} (1 image)\n"
    assert main(["pretrain", "--model", "conv", "model.channels=5"]) == 2
    assert capsys.readouterr().err == ("aevision: error: model.channels: got 5, expected a list of "
                                       "integers or null\n")


def test_describe_items():
    from typing import Literal

    from aevision.validation import describe, plural

    assert describe(list[float]) == "a list of numbers"
    assert describe(list[Literal["a", "b"]] | None) == "a list of values among 'a', 'b' or null"
    assert describe(list[list[int]]) == "a list of lists of integers"
    assert (plural(1, "query", "queries"), plural(0, "image")) == ("1 query", "0 images")


def test_a_pickled_checkpoint_is_refused_without_torchs_advice_to_unpickle_it(tmp_path, capsys):
    import torch

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch PWNED",))

    assert main([*PRETRAIN, "--epochs", "1", "--no-progress", "-o", str(tmp_path / "r")]) == 0
    torch.save({"format": 1, "payload": Evil()}, tmp_path / "r" / "checkpoints" / "last.ckpt")
    capsys.readouterr()
    assert main([*PRETRAIN, "--epochs", "2", "--no-progress", "-o", str(tmp_path / "r"), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"aevision: error: {tmp_path / 'r' / 'checkpoints' / 'last.ckpt'}: refused to "
                          "load checkpoint: not a file of plain tensors and numbers (")
    assert "posix.system" in err and len(err.splitlines()) == 1  # the wording varies with torch's version
    assert "weights_only" not in err and "\x1b" not in err and not (tmp_path / "PWNED").exists()


def test_decompress_with_a_model_that_is_no_codec_says_decompress(model, tmp_path, capsys):
    (tmp_path / "x.aev").write_bytes(b"AEV")
    assert main(["decompress", "-m", str(model), str(tmp_path / "x.aev"), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "this model has no entropy model, so it can neither compress nor decompress" in err


def test_a_query_given_as_a_file_and_inside_its_folder_is_searched_once(model, tmp_path, capsys):
    pytest.importorskip("faiss")
    imgs = model.parent / "imgs"
    assert main(["index", "-m", str(model), str(imgs), "-o", str(tmp_path / "idx")]) == 0
    capsys.readouterr()
    assert main(["search", str(tmp_path / "idx"), str(imgs / "1.png"), str(imgs), "-k", "1"]) == 0
    queries = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("query ")]
    assert queries == [f"query {imgs / n}:" for n in ("1.png", "0.png", "2.png")]


def test_readme_gives_the_cpu_only_install_beside_the_default():
    readme = (Path(__file__).parents[1] / "README.md").read_text().splitlines()
    assert readme[6:8] == [  # CI runs the README's test command verbatim
        "pip install -e . && aevision demo          # the main job: offline, a few minutes on 2 CPU cores",
        'pip install -e ".[dev]" && pytest          # the tests: offline, a few minutes on 2 CPU cores']
    cpu = readme.index("pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu")
    assert cpu < 25 and readme[cpu + 1] == "pip install -e ."


@pytest.mark.parametrize(("reg", "known"), [("l1:wieght=1", "weight"),
                                            ("contractive:wieght=1", "method, projections, samples, weight")])
def test_a_misspelled_regularizer_option_names_the_real_ones(reg, known, tmp_path, capsys):
    """#34, item 3: '--reg l1:wieght=1' said 'expected a known option: none'."""
    from aevision.cli import main

    code = main(["pretrain", "--dataset", "digits", "--limit", "50", "--epochs", "1", "--reg", reg,
                 "-o", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "regularizers[0].wieght" in err and known in err and "did you mean 'weight'?" in err
    assert not (tmp_path / "run" / "model.safetensors").exists()


@pytest.mark.parametrize("argv", [
    ["pretrain", "--dataset", "folder:~aevision-no-such-user/x", "--model", "dense", "--epochs", "1"],
    ["index", "~aevision-no-such-user/x", "-m", "MODEL"],
    ["prepare", "~aevision-no-such-user/x"],
    ["segment", "--scratch", "--dataset", "segfolder:~aevision-no-such-user/x"],
])
def test_a_home_folder_of_no_such_user_is_one_line(argv, model, tmp_path, capsys):
    """'~someone/x' for an unknown user: pathlib's bare RuntimeError was an internal error."""
    argv = [str(model) if a == "MODEL" else a for a in argv] + ["-o", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == "aevision: error: ~aevision-no-such-user/x: no such user's home folder (the '~' cannot " \
                  "be expanded)\n"
