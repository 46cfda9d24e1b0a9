"""The run lifecycle (engine/run.py) as every training run uses it: a key that says "this run is
identical", reuse of a finished run, automatic resume only under the same key, ``init_from``."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
import torch

import aevision
from aevision.data.sources import fingerprint
from aevision.engine.run import RECORD, Run, run_key
from aevision.errors import AevisionError
from aevision.io import read_safetensors
from conftest import tiny_config


def weights(folder):
    return read_safetensors(folder / "model.safetensors")


def test_a_finished_run_is_reused_only_when_identical(tmp_path):
    cfg = tiny_config(tmp_path / "a")
    first = aevision.pretrain(cfg, reuse=True)
    assert not first.reused and first.timing["cpu_seconds"] is not None
    record = json.loads((tmp_path / "a" / RECORD).read_text())
    assert record["state"] == "finished" and record["key"]["aevision"] == aevision.__version__
    assert "output_dir" not in record["key"]["config"]
    again = aevision.pretrain(cfg, reuse=True)
    assert again.reused and again.fit.history == first.fit.history
    assert all(torch.equal(again.model.state_dict()[k], v) for k, v in first.model.state_dict().items())
    # other data (the same config): trained again, not reused
    data = again.data
    fewer = type(data)(train=data.train.subset(torch.arange(200)), val=data.val, test=data.test)
    assert not aevision.pretrain(cfg, data=fewer, reuse=True).reused
    # without reuse, a rerun into the folder is refused, unless the caller says to replace it
    with pytest.raises(AevisionError, match="holds a trained model already"):
        aevision.pretrain(cfg)
    # said before any data is loaded (a folder that does not exist is not even looked at)
    with pytest.raises(AevisionError, match="holds a trained model already"):
        aevision.pretrain({**cfg, "data": {"name": f"folder:{tmp_path / 'nowhere'}"}})
    assert not aevision.pretrain(cfg, overwrite=True).reused


def test_a_checkpoint_is_resumed_automatically_only_under_its_own_key(tmp_path):
    last = tmp_path / "checkpoints" / "last.ckpt"
    Run(tmp_path, run_key({"x": 1}, data="d")).start()
    last.parent.mkdir()
    last.write_bytes(b"checkpoint")
    assert Run(tmp_path, run_key({"x": 1}, data="d")).start(reuse=True)
    assert last.is_file()
    assert Run(tmp_path, run_key({"x": 1}, data="d")).finished() is None  # started, never finished
    assert not Run(tmp_path, run_key({"x": 1}, data="other")).start(reuse=True)
    assert not last.exists()  # nobody may resume a checkpoint of another run later


def test_resume_refuses_a_run_that_started_from_other_data_or_other_weights(tmp_path):
    """The checkpoint's config cannot see either: the run would go on over other images (its best
    epoch chosen across two validation sets) or record starting weights it never had."""
    Run(tmp_path, run_key({"x": 1}, data="d", init="w1")).start()
    with pytest.raises(AevisionError, match=r"--resume: the run in .* trained on other data"):
        Run(tmp_path, run_key({"x": 1}, data="fewer", init="w1")).start(resume=True)
    with pytest.raises(AevisionError, match="started from other weights"):
        Run(tmp_path, run_key({"x": 1}, data="d", init="w2")).start(resume=True)
    with pytest.raises(AevisionError, match="started from weights not given now"):
        Run(tmp_path, run_key({"x": 1}, data="d")).start(resume=True)
    # the same inputs with a resumable change of config (more epochs): resumed
    assert Run(tmp_path, run_key({"x": 2}, data="d", init="w1")).start(resume=True)
    Run(tmp_path, run_key({"x": 1}, data="d")).start(overwrite=True)
    with pytest.raises(AevisionError, match="started from random weights, not the ones given now"):
        Run(tmp_path, run_key({"x": 1}, data="d", init="w1")).start(resume=True)


def test_pretrain_resume_refuses_changed_starting_weights_and_data(tmp_path, capsys):
    from aevision.cli import main

    def pretrain(out, *extra):
        return main(["pretrain", "--dataset", "digits", "--model", "dense", "--epochs", "1", "--no-progress",
                     "model.code_dim=8", "-o", str(tmp_path / out), *extra])

    assert pretrain("a") == 0 and pretrain("b", "--seed", "1") == 0
    assert pretrain("c", "--init-from", str(tmp_path / "a")) == 0
    assert pretrain("c", "--init-from", str(tmp_path / "b"), "--epochs", "2", "--resume") == 2
    assert "started from other weights" in capsys.readouterr().err
    again = ("--init-from", str(tmp_path / "a"), "--epochs", "2", "--resume")
    assert pretrain("c", *again, "--limit", "500") == 2
    assert "trained on other data" in capsys.readouterr().err
    assert pretrain("c", *again) == 0


def test_the_key_ignores_where_the_run_is_written_and_sees_the_data():
    a = run_key({"seed": 0, "output_dir": "runs/a"}, data=fingerprint(torch.zeros(2, 3)))
    b = run_key({"seed": 0, "output_dir": "elsewhere/b"}, data=fingerprint(torch.zeros(2, 3)))
    assert a == b
    assert fingerprint(torch.zeros(2, 3)) != fingerprint(torch.zeros(3, 2))
    assert fingerprint(torch.zeros(2, 3)) != fingerprint(torch.zeros(2, 3, dtype=torch.uint8))
    assert fingerprint(torch.zeros(6)) != fingerprint(torch.ones(6))


def test_a_setting_added_later_at_its_neutral_value_keeps_the_stored_runs():
    """A run stored before ``augment.translate`` or ``train.nesterov`` existed is the same run as one
    keyed with them at the values that change nothing; set otherwise, they make another run."""
    before = {"method_config": {"augment": {"hflip": True}, "train": {"lr": 0.1}}, "protocol": {"c": 1}}
    now = {"method_config": {"augment": {"hflip": True, "translate": 0},
                             "train": {"lr": 0.1, "momentum": 0.9, "nesterov": False}},
           "protocol": {"c": 1, "head_lr_scale": 1.0}}
    assert run_key(now) == run_key(before)
    assert run_key({"translate": False}) != run_key({})  # the neutral value of its own type only
    for section, setting, value in (("augment", "translate", 4), ("train", "nesterov", True),
                                    ("train", "momentum", 0.5)):
        changed = copy.deepcopy(now)
        changed["method_config"][section][setting] = value
        assert run_key(changed) != run_key(before)


def test_progress_lines_do_not_make_another_run(tmp_path):
    """A finished run is found again when only how it reports changed, at any depth (a benchmark's
    key nests its models' pretraining configs), also from a record that still holds the setting."""
    nested = {"method_config": {"pretrain": {"train": {"lr": 0.1, "progress": True}}}}
    quiet = {"method_config": {"pretrain": {"train": {"lr": 0.1, "progress": False}}}}
    assert run_key(nested) == run_key(quiet)
    assert run_key(nested) != run_key({"method_config": {"pretrain": {"train": {"lr": 0.2}}}})
    cfg = tiny_config(tmp_path / "a")
    cfg["train"]["progress"] = True
    first = aevision.pretrain(cfg, reuse=True)
    record = json.loads((tmp_path / "a" / RECORD).read_text())
    record["key"]["config"]["train"]["progress"] = True  # as an older aevision wrote it
    (tmp_path / "a" / RECORD).write_text(json.dumps(record))
    again = aevision.pretrain({**cfg, "train": {**cfg["train"], "progress": False}}, reuse=True)
    assert again.reused and again.fit.history == first.fit.history


def test_init_from_starts_from_trained_weights(tmp_path):
    base = aevision.pretrain(tiny_config(tmp_path / "base", train={"epochs": 3, "batch_size": 32,
                                                                   "progress": False}))
    still = {"epochs": 1, "batch_size": 32, "lr": 1e-12, "progress": False}  # the weights barely move
    cont = aevision.pretrain(tiny_config(tmp_path / "cont", train=still), init_from=base.out_dir)
    fresh = aevision.pretrain(tiny_config(tmp_path / "fresh", train=still))
    w0, w1, w2 = weights(base.out_dir), weights(cont.out_dir), weights(fresh.out_dir)
    assert all(torch.allclose(w0[k], w1[k], atol=1e-6) for k in w0)
    assert not all(torch.allclose(w0[k], w2[k], atol=1e-3) for k in w0)
    summary = json.loads((cont.out_dir / "summary.json").read_text())
    assert summary["init_from"]["path"] == str(base.out_dir)
    # the starting weights are part of the run's identity
    assert json.loads((cont.out_dir / RECORD).read_text())["key"]["init"] == \
        summary["init_from"]["weights_sha256"]


def test_init_from_another_architecture_is_a_one_line_error(tmp_path):
    base = aevision.pretrain(tiny_config(tmp_path / "base"))
    other = tiny_config(tmp_path / "other", model={"name": "dense", "code_dim": 8})
    with pytest.raises(AevisionError, match=r"weights do not match|has shape"):
        aevision.pretrain(other, init_from=base.out_dir)
    with pytest.raises(AevisionError, match=r"init_from: .*no model weights"):
        aevision.pretrain(other, init_from=tmp_path / "nowhere")


def test_cli_init_from(tmp_path):
    base = aevision.pretrain(tiny_config(tmp_path / "base"))
    cmd = [sys.executable, "-m", "aevision.cli", "pretrain", "--model", "dense", "--dataset", "digits",
           "--limit", "300", "--epochs", "1", "--init-from", str(base.out_dir), "-o", str(tmp_path / "cont"),
           "model.code_dim=16", "train.progress=false"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"from {base.out_dir}" in proc.stdout
    bad = subprocess.run([*cmd[:-2], "model.code_dim=8", "train.progress=false"], capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr


def test_a_segmenter_is_reused_until_its_encoders_weights_change(tmp_path):
    from aevision.config import DataConfig
    from aevision.data.segmentation import load_segmentation
    from aevision.models import build_model, save_model

    ae = build_model("conv", (3, 16, 16), {"channels": [8, 12], "code_dim": 8}, [])
    save_model(ae, tmp_path / "ae")
    data = load_segmentation(DataConfig(name="shapes-seg", val_fraction=0.0,
                                        options={"n_train": 16, "n_test": 8, "size": 16}), 0)

    def run(init):
        return aevision.segment({"encoder": str(tmp_path / "ae"), "init": init, "examples": 0,
                                 "output_dir": str(tmp_path / init), "data": {"name": "shapes-seg"},
                                 "train": {"epochs": 1, "batch_size": 8, "progress": False}},
                                data=data, reuse=True)

    first = {init: run(init) for init in ("pretrained", "scratch")}
    again = {init: run(init) for init in ("pretrained", "scratch")}
    assert again["pretrained"].metrics == first["pretrained"].metrics
    assert (tmp_path / "pretrained" / RECORD).is_file()
    record = json.loads((tmp_path / "pretrained" / RECORD).read_text())
    assert record["state"] == "finished" and record["key"]["init"] != \
        json.loads((tmp_path / "scratch" / RECORD).read_text())["key"]["init"]
    mtimes = {i: (tmp_path / i / "model.safetensors").stat().st_mtime_ns for i in first}
    assert all((tmp_path / i / "model.safetensors").stat().st_mtime_ns == mtimes[i] for i in first)
    # the autoencoder retrained (same architecture, other weights): the pretrained segmenter trains
    # again; the scratch one took only the architecture and is still the same run
    with torch.no_grad():
        for p in ae.parameters():
            p.add_(0.1)
    save_model(ae, tmp_path / "ae")
    run("pretrained"), run("scratch")
    assert (tmp_path / "pretrained" / "model.safetensors").stat().st_mtime_ns != mtimes["pretrained"]
    assert (tmp_path / "scratch" / "model.safetensors").stat().st_mtime_ns == mtimes["scratch"]


def test_cli_refuses_to_replace_a_trained_model_without_overwrite(tmp_path):
    """#34, item 2: a rerun into a run folder replaced a conv by a dense model silently."""
    out = tmp_path / "pk"
    cmd = [sys.executable, "-m", "aevision.cli", "pretrain", "--dataset", "digits", "--limit", "200",
           "--epochs", "1", "--no-progress", "-o", str(out)]
    assert subprocess.run([*cmd, "--model", "conv"], capture_output=True, timeout=300).returncode == 0
    before = weights(out)
    proc = subprocess.run([*cmd, "--model", "dense"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "--overwrite" in proc.stderr and "--resume" in proc.stderr and str(out) in proc.stderr
    after = weights(out)
    assert set(after) == set(before) and all(torch.equal(after[k], before[k]) for k in before)
    proc = subprocess.run([*cmd, "--model", "dense", "--overwrite"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "config.json").read_text())["model"]["name"] == "dense"


def test_identical_weights_are_saved_as_identical_files_in_any_process(tmp_path):
    """safetensors writes its metadata map in hash order, which differs from process to process: the
    same weights gave files of different SHA-256, so a model pretrained again to the same weights
    did not match its stored runs (benchmark outcomes_dir). The header is now written sorted."""
    script = ("import sys, torch; from aevision.io import write_safetensors, file_sha256; "
              "meta = {k: k.upper() for k in 'abcdefg'}; "
              "write_safetensors(sys.argv[1], {'w': torch.arange(6.).view(2, 3), 'b': torch.ones(3)}, meta); "
              "print(file_sha256(sys.argv[1]))")
    shas = {subprocess.run([sys.executable, "-c", script, str(tmp_path / f"{i}.safetensors")], check=True,
                           capture_output=True, text=True).stdout.strip() for i in range(3)}
    assert len(shas) == 1
    from safetensors import safe_open

    with safe_open(str(tmp_path / "0.safetensors"), "pt") as f:  # still a valid file, metadata kept
        assert f.metadata() == {k: k.upper() for k in "abcdefg"}
        assert torch.equal(f.get_tensor("w"), torch.arange(6.).view(2, 3))
    assert (8 + int.from_bytes((tmp_path / "0.safetensors").read_bytes()[:8], "little")) % 8 == 0
