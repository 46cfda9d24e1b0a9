"""Retrieval: the FAISS gallery index (build, search, disk), the metrics, and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import average_precision_score

from aevision.cli import main
from aevision.data.splits import limited
from aevision.errors import AevisionError
from aevision.models import build_model, save_model
from aevision.tasks.retrieval import GalleryIndex, average_precision, retrieval_metrics


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert main(["pretrain", "--dataset", "digits", "--limit", "300", "--epochs", "1",
                 "--batch-size", "32", "--no-progress", "--model", "dense", "model.code_dim=8",
                 "model.code_activation=linear",  # no dead units: distinct codes, no ties
                 "-o", str(out)]) == 0
    return out


def clustered(n: int, d: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    centres = torch.randn(4, d, generator=g) * 4
    return centres[labels] + torch.randn(n, d, generator=g), labels


@pytest.mark.parametrize("kind, metric", [("flat", "l2"), ("flat", "cosine"), ("ivf", "l2"),
                                          ("hnsw", "cosine")])
def test_index_round_trip_on_disk(tmp_path, kind, metric):
    x, labels = clustered(400, 12)
    index = GalleryIndex.build(x, kind=kind, metric=metric, labels=labels, nlist=8, nprobe=3,
                               ef_search=20, meta={"note": "kept"})
    before = index.search(x[:25], k=7)
    index.save(tmp_path / "idx")
    loaded = GalleryIndex.load(tmp_path / "idx")
    after = loaded.search(x[:25], k=7)
    np.testing.assert_array_equal(after.ids, before.ids)
    np.testing.assert_allclose(after.distances, before.distances, rtol=1e-6)
    assert torch.equal(loaded.labels, labels)
    assert loaded.meta["note"] == "kept" and loaded.meta["kind"] == kind and len(loaded) == 400
    if kind == "ivf":
        assert loaded.meta["params"] == {"nlist": 8, "nprobe": 3}


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_exact_search_finds_each_gallery_item_first_with_true_distances(metric):
    x, _ = clustered(300, 10, seed=1)
    found = GalleryIndex.build(x, metric=metric).search(x, k=5)
    np.testing.assert_array_equal(found.ids[:, 0], np.arange(300))
    assert np.all(found.distances[:, 0] < 1e-3)
    assert np.all(np.diff(found.distances, axis=1) >= -1e-5)  # nearest first
    # the distances are the real ones: Euclidean, or 1 - cosine similarity
    j = found.ids[7, 3]
    if metric == "l2":
        expected = float((x[7] - x[j]).norm())
    else:
        expected = 1 - float(torch.nn.functional.cosine_similarity(x[7], x[j], dim=0))
    assert found.distances[7, 3] == pytest.approx(expected, rel=1e-4, abs=1e-5)


def test_corrupt_and_foreign_index_files_are_one_line_errors(tmp_path):
    x, labels = clustered(100, 4)
    folder = GalleryIndex.build(x, labels=labels).save(tmp_path / "idx")
    data = (folder / "index.faiss").read_bytes()
    (folder / "index.faiss").write_bytes(data[: len(data) // 2])
    with pytest.raises(AevisionError, match="corrupt or replaced"):
        GalleryIndex.load(folder)
    # a foreign file that the JSON vouches for: FAISS itself refuses it
    meta = json.loads((folder / "index.json").read_text())
    import hashlib

    junk = b"not an index at all" * 10
    (folder / "index.faiss").write_bytes(junk)
    meta["index_sha256"] = hashlib.sha256(junk).hexdigest()
    (folder / "index.json").write_text(json.dumps(meta))
    with pytest.raises(AevisionError, match="not a FAISS index") as e:
        GalleryIndex.load(folder)
    assert "\n" not in str(e.value)
    (folder / "index.json").write_text("{broken")
    with pytest.raises(AevisionError, match="not valid JSON"):
        GalleryIndex.load(folder)
    (folder / "index.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(AevisionError, match="not an aevision index"):
        GalleryIndex.load(folder)
    with pytest.raises(AevisionError, match="no such index folder"):
        GalleryIndex.load(tmp_path / "missing")
    with pytest.raises(AevisionError, match="queries have 3 features"):
        GalleryIndex.build(x).search(torch.zeros(2, 3))


def test_average_precision_matches_sklearn():
    rng = np.random.default_rng(0)
    dist = rng.random((20, 50))
    rel = rng.random((20, 50)) < 0.3
    ours = average_precision(dist, rel)
    for i in range(20):
        assert ours[i] == pytest.approx(average_precision_score(rel[i], -dist[i]))
    assert np.isnan(average_precision(dist[:1], np.zeros((1, 50), dtype=bool)))[0]


def test_retrieval_metrics_by_hand():
    gallery = torch.tensor([[0.0], [1.0], [2.0], [10.0]])
    g_labels = torch.tensor([0, 1, 0, 1])
    queries = torch.tensor([[0.1], [9.0]])
    q_labels = torch.tensor([0, 1])
    m = retrieval_metrics(queries, q_labels, gallery, g_labels, ks=(1, 2))
    # query 0 ranks 0(rel) 1 2(rel) 3: AP = (1/1 + 2/3) / 2; query 1 ranks 3(rel) 2 1(rel) 0: same
    assert m["map"] == pytest.approx((1 + 2 / 3) / 2)
    assert m["precision@1"] == 1.0 and m["precision@2"] == 0.5


def test_index_and_search_cli(trained, tmp_path, capsys):
    folder = tmp_path / "gallery"
    for c in ("a", "b"):
        (folder / c).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(12):
        img = rng.integers(0, 256, (8, 8), dtype=np.uint8)
        Image.fromarray(img).save(folder / ("a" if i % 2 else "b") / f"{i}.png")
    index = tmp_path / "idx"
    assert main(["index", str(folder), "-m", str(trained), "-o", str(index)]) == 0
    query = folder / "a" / "3.png"
    out, grid = tmp_path / "res.json", tmp_path / "grid.png"
    assert main(["search", str(index), str(query), "-k", "4", "-o", str(out), "--grid", str(grid)]) == 0
    res = json.loads(out.read_text())
    first = res["queries"][0]["neighbours"][0]
    assert first["file"].endswith("a/3.png") and first["distance"] < 1e-3 and first["class"] == "a"
    assert len(res["queries"][0]["neighbours"]) == 4
    assert Image.open(grid).size == (((8 + 2) * 5 + 2) * 8, (8 + 2 + 2) * 8)  # query + 4 neighbours, x8

    # a dataset gallery, an approximate index, dataset queries: each query finds itself first
    capsys.readouterr()
    again = ["index", "digits", "--split", "test", "--limit", "200", "-m", str(trained),
             "-o", str(index), "--kind", "hnsw", "--metric", "cosine"]
    assert main(again) == 2  # an index is there: replaced only when asked
    assert "index.faiss exists already (3 of the 3 files to write); give --overwrite" in \
        capsys.readouterr().err
    assert main(["index", str(folder), "-m", str(trained), "-o", str(trained)]) == 2
    assert "a model's folder; give the index a folder of its own" in capsys.readouterr().err
    assert main([*again, "--overwrite"]) == 0
    assert main(["search", str(index), "--dataset", "digits", "--split", "test", "--limit", "30",
                 "-o", str(out)]) == 0
    res = json.loads(out.read_text())
    gallery = limited(449, 200, seed=0).tolist()  # both limits draw with --seed 0: the queries are in it
    found = [q["neighbours"][0]["id"] for q in res["queries"]]
    assert found == [gallery.index(i) for i in limited(449, 30, seed=0).tolist()]
    assert all(q["neighbours"][0]["label"] == q["label"] for q in res["queries"])
    # each query named by its row in the dataset (test images follow digits' 1,348 training ones)
    assert [q["query"] for q in res["queries"]] == [f"digits#{1348 + i}" for i in limited(449, 30, seed=0)]
    capsys.readouterr()

    # the index remembers its model: changed weights are refused
    weights = trained / "model.safetensors"
    saved = weights.read_bytes()
    try:
        other = save_model(build_model("dense", (1, 8, 8), {"code_dim": 8}), tmp_path / "other")
        weights.write_bytes((other / "model.safetensors").read_bytes())
        assert main(["search", str(index), str(query)]) == 2
        assert "not the model" in capsys.readouterr().err
    finally:
        weights.write_bytes(saved)
    (index / "index.faiss").write_bytes(b"garbage")
    assert main(["search", str(index), str(query)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("aevision: error:") and "corrupt" in err and err.count("\n") == 1
