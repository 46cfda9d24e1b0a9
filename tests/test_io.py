"""Artefacts: pickle-free model files that round-trip exactly, and atomic writes."""

from __future__ import annotations

import json

import pytest
import torch

import aevision
from aevision.errors import AevisionError
from aevision.io import atomic_open, write_json
from aevision.models import build_model, load_model, save_model


@pytest.mark.parametrize("name,options,regs", [
    ("dense", {"code_dim": 6}, [{"name": "topk", "k": 3}]),
    ("conv", {"channels": [4, 8], "code_dim": 5, "batch_norm": True}, [{"name": "contractive"}]),
])
def test_safetensors_round_trip_gives_identical_encodings(tmp_path, name, options, regs):
    model = build_model(name, (1, 9, 7), options, regs)
    model(torch.rand(8, 1, 9, 7))  # move batch-norm statistics away from their init
    model.eval()
    save_model(model, tmp_path)
    loaded = aevision.load(tmp_path)
    x = torch.rand(5, 1, 9, 7)
    assert torch.equal(model.encode(x), loaded.encode(x))
    assert torch.equal(aevision.encode(model, x), aevision.encode(loaded, x))
    assert not loaded.training
    assert json.loads((tmp_path / "config.json").read_text())["model"]["name"] == name


def test_loading_mismatched_or_corrupt_files_is_a_clear_error(tmp_path):
    model = build_model("dense", (1, 4, 4), {"code_dim": 3})
    save_model(model, tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["model"]["options"]["code_dim"] = 5
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(AevisionError, match=r"model.safetensors: tensor .* has shape"):
        load_model(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(AevisionError, match="not a valid safetensors file"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text("{")
    with pytest.raises(AevisionError, match=r"config\.json: not valid JSON"):
        load_model(tmp_path)
    with pytest.raises(AevisionError, match="no such model folder"):
        load_model(tmp_path / "nope")


def test_atomic_write_leaves_the_old_file_on_failure(tmp_path):
    target = tmp_path / "metrics.json"
    write_json(target, {"a": 1})
    with pytest.raises(RuntimeError), atomic_open(target, "w") as f:
        f.write('{"a": ')
        raise RuntimeError("killed mid-write")
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_feature_extractor_is_sklearn_compatible(tmp_path):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    model = build_model("dense", (1, 4, 4), {"code_dim": 3})
    save_model(model, tmp_path)
    x = torch.rand(20, 16).numpy()
    y = (x.sum(1) > 8).astype(int)
    pipe = make_pipeline(aevision.FeatureExtractor(str(tmp_path)), LogisticRegression())
    pipe.fit(x, y)
    assert pipe.predict(x).shape == (20,)
    assert pipe[0].transform(x).shape == (20, 3)
