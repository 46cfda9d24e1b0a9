"""Retrieval in code space: a FAISS index over gallery features, and how to score it.

:class:`GalleryIndex` wraps a FAISS index: exact search (``flat``) by default, or an approximate
one for large galleries (``ivf``: inverted lists probed ``nprobe`` at a time; ``hnsw``: a graph
searched with beam ``ef_search``). ``cosine`` L2-normalises the features and searches by inner
product. On disk an index is a folder, each file written atomically and none of them a pickle:

- ``index.faiss``: FAISS's own serialisation,
- ``gallery.safetensors``: the gallery labels (when known),
- ``index.json``: what was indexed and how (kind, metric, dimension, count, the model and data
  source with their fingerprints, the SHA-256 of ``index.faiss``). Written last, so a folder
  without it is an unfinished index.

:func:`retrieval_metrics` scores a ranking with class labels as relevance: precision@k and mean
average precision over the whole gallery ranking (mAP@all), computed exactly in torch.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from aevision.errors import AevisionError, ConfigError
from aevision.io import read_json, read_safetensors, write_bytes, write_json, write_safetensors

Kind = Literal["flat", "ivf", "hnsw"]
Metric = Literal["l2", "cosine"]
KINDS: tuple[str, ...] = ("flat", "ivf", "hnsw")
METRICS: tuple[str, ...] = ("l2", "cosine")

FORMAT = "aevision-index"
VERSION = 1
INDEX_FILE = "index.faiss"
META_FILE = "index.json"
LABELS_FILE = "gallery.safetensors"


def _faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise AevisionError("retrieval needs FAISS: pip install faiss-cpu") from None
    return faiss


def set_threads(n: int) -> None:
    """FAISS's OpenMP threads (it takes every core by default)."""
    _faiss().omp_set_num_threads(int(n))


def prepare(features: Tensor | np.ndarray, metric: Metric) -> np.ndarray:
    """(N, D) features -> contiguous float32, unit-normalised for ``cosine``."""
    x = torch.as_tensor(features).float()
    if x.dim() != 2:
        raise AevisionError(f"features must be a (N, D) matrix, got shape {tuple(x.shape)}")
    if metric == "cosine":
        x = torch.nn.functional.normalize(x, dim=1)
    return np.ascontiguousarray(x.numpy(), dtype=np.float32)


def default_nlist(n: int) -> int:
    """Inverted lists for ``n`` vectors: ~4 sqrt(n), with at least 39 training points per list
    (FAISS's minimum for k-means to be meaningful)."""
    return max(1, min(int(4 * n ** 0.5), n // 39))


@dataclass
class Neighbours:
    """``ids`` (Q, k) gallery positions, nearest first; ``distances`` (Q, k): Euclidean for
    ``l2``, ``1 - cosine similarity`` for ``cosine``. Missing results (an approximate index
    that found fewer than k) have id -1 and distance inf."""

    ids: np.ndarray
    distances: np.ndarray


class GalleryIndex:
    """A searchable gallery: ``build`` from features, ``search``, ``save`` and ``load``."""

    def __init__(self, index: Any, meta: dict[str, Any], labels: Tensor | None = None):
        self.index = index
        self.meta = meta
        self.labels = labels

    # --- building and searching ---------------------------------------------------------------

    @classmethod
    def build(cls, features: Tensor | np.ndarray, *, kind: Kind = "flat", metric: Metric = "l2",
              labels: Tensor | None = None, nlist: int | None = None, nprobe: int = 8,
              hnsw_m: int = 32, ef_search: int = 64, ef_construction: int = 40,
              meta: dict[str, Any] | None = None) -> GalleryIndex:
        """Index ``features`` (N, D); gallery item i keeps id i."""
        faiss = _faiss()
        if kind not in KINDS:
            raise ConfigError("index kind", kind, f"one of {', '.join(KINDS)}")
        if metric not in METRICS:
            raise ConfigError("index metric", metric, f"one of {', '.join(METRICS)}")
        x = prepare(features, metric)
        n, d = x.shape
        if n == 0:
            raise AevisionError("cannot index an empty gallery")
        if labels is not None and len(labels) != n:
            raise AevisionError(f"{n} gallery features but {len(labels)} labels")
        for name, value in (("nprobe", nprobe), ("hnsw_m", hnsw_m), ("ef_search", ef_search),
                            ("ef_construction", ef_construction)):
            if value < 1:
                raise ConfigError(name, value, "a positive integer")
        faiss_metric = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
        params: dict[str, Any] = {}
        if kind == "flat":
            index = faiss.IndexFlatIP(d) if metric == "cosine" else faiss.IndexFlatL2(d)
        elif kind == "ivf":
            nlist = default_nlist(n) if nlist is None else nlist
            if not 1 <= nlist <= n:
                raise ConfigError("nlist", nlist, f"1..{n} (the gallery size)")
            quantizer = faiss.IndexFlatIP(d) if metric == "cosine" else faiss.IndexFlatL2(d)
            index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss_metric)
            index.train(x)
            index.nprobe = min(nprobe, nlist)
            params = {"nlist": nlist, "nprobe": index.nprobe}
        else:
            index = faiss.IndexHNSWFlat(d, hnsw_m, faiss_metric)
            index.hnsw.efConstruction = ef_construction
            index.hnsw.efSearch = ef_search
            params = {"hnsw_m": hnsw_m, "ef_search": ef_search, "ef_construction": ef_construction}
        index.add(x)
        info = {"format": FORMAT, "version": VERSION, "kind": kind, "metric": metric, "dim": d,
                "count": n, "params": params, "labelled": labels is not None, **(meta or {})}
        return cls(index, info, None if labels is None else torch.as_tensor(labels).long())

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def search(self, queries: Tensor | np.ndarray, k: int = 10) -> Neighbours:
        """The ``k`` nearest gallery items of each query (Q, D)."""
        if k < 1:
            raise ConfigError("-k", k, "a positive integer")
        q = prepare(queries, self.meta["metric"])
        if q.shape[1] != self.dim:
            raise AevisionError(f"queries have {q.shape[1]} features, the index holds {self.dim}")
        k = min(k, len(self))
        sims, ids = self.index.search(q, k)
        found = ids >= 0
        # FAISS returns similarities for cosine, squared distances for l2 (rounding can make a
        # self-match slightly negative)
        cosine = self.meta["metric"] == "cosine"
        dist = 1.0 - sims if cosine else np.sqrt(np.maximum(sims, 0.0))
        return Neighbours(ids.astype(np.int64), np.where(found, dist, np.inf).astype(np.float32))

    # --- disk -----------------------------------------------------------------------------------

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write ``folder/`` (index, labels, then the JSON that vouches for both)."""
        faiss = _faiss()
        folder = Path(folder)
        if folder.exists() and not folder.is_dir():
            raise AevisionError(f"{folder}: exists and is not a folder (an index is a folder)")
        data = faiss.serialize_index(self.index).tobytes()
        write_bytes(folder / INDEX_FILE, data)
        meta = dict(self.meta)
        meta["index_sha256"] = hashlib.sha256(data).hexdigest()
        meta["index_bytes"] = len(data)
        if self.labels is not None:
            write_safetensors(folder / LABELS_FILE, {"labels": self.labels},
                              metadata={"format": FORMAT})
        else:  # a replaced index's labels would describe another gallery
            (folder / LABELS_FILE).unlink(missing_ok=True)
        write_json(folder / META_FILE, meta)
        self.meta = meta
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> GalleryIndex:
        """Read an index folder; anything missing, corrupt or foreign is a one-line error."""
        faiss = _faiss()
        folder = Path(folder)
        if not folder.is_dir():
            raise AevisionError(f"{folder}: no such index folder (make one with 'aevision index')")
        meta = read_json(folder / META_FILE, "index description")
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise AevisionError(f"{folder / META_FILE}: not an aevision index description")
        if int(meta.get("version", 0)) > VERSION:
            raise AevisionError(f"{folder / META_FILE}: made by a newer aevision (index version "
                                f"{meta.get('version')}); upgrade aevision")
        for key in ("kind", "metric", "dim", "count", "index_sha256"):
            if key not in meta:
                raise AevisionError(f"{folder / META_FILE}: missing {key!r}")
        path = folder / INDEX_FILE
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise AevisionError(f"{path}: index file not found") from None
        if hashlib.sha256(data).hexdigest() != meta["index_sha256"]:
            raise AevisionError(f"{path}: corrupt or replaced (its SHA-256 differs from the one in "
                                f"{META_FILE}); rebuild the index")
        try:
            index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8).copy())
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else "unreadable"
            raise AevisionError(f"{path}: not a FAISS index ({first[-120:]})") from None
        if int(index.d) != int(meta["dim"]) or int(index.ntotal) != int(meta["count"]):
            raise AevisionError(f"{path}: holds {index.ntotal} x {index.d} vectors, "
                                f"{META_FILE} says {meta['count']} x {meta['dim']}")
        labels = None
        if meta.get("labelled"):
            labels = read_safetensors(folder / LABELS_FILE, "gallery labels").get("labels")
            if labels is None or labels.shape != (int(meta["count"]),):
                raise AevisionError(f"{folder / LABELS_FILE}: expected {meta['count']} labels")
        out = cls(index, meta, labels)
        out.set_search_params(**meta.get("params", {}))
        return out

    def set_search_params(self, nprobe: int | None = None, ef_search: int | None = None,
                          **_: Any) -> None:
        """Speed/recall knobs of the approximate kinds (ignored by ``flat``)."""
        faiss = _faiss()
        if nprobe is not None and self.meta["kind"] == "ivf":
            if nprobe < 1:
                raise ConfigError("--nprobe", nprobe, "a positive integer")
            faiss.extract_index_ivf(self.index).nprobe = int(nprobe)
        if ef_search is not None and self.meta["kind"] == "hnsw":
            if ef_search < 1:
                raise ConfigError("--ef-search", ef_search, "a positive integer")
            self.index.hnsw.efSearch = int(ef_search)


# --- evaluation ----------------------------------------------------------------------------------


def distances(queries: Tensor, gallery: Tensor, metric: Metric) -> Tensor:
    """(Q, D), (N, D) -> (Q, N): squared Euclidean, or 1 - cosine similarity (both rank alike
    with the index's distances)."""
    if metric == "cosine":
        q = torch.nn.functional.normalize(queries, dim=1)
        g = torch.nn.functional.normalize(gallery, dim=1)
        return 1.0 - q @ g.T
    return (queries.pow(2).sum(1, keepdim=True) - 2.0 * queries @ gallery.T
            + gallery.pow(2).sum(1)[None, :])


def average_precision(dist: np.ndarray, relevant: np.ndarray, ordered: np.ndarray | None = None
                      ) -> np.ndarray:
    """AP of each query row of a (Q, N) distance matrix with (Q, N) boolean relevance: the mean,
    over the relevant items, of the precision at their rank. NaN for rows with no relevant item.

    The rank of a relevant item is the number of gallery items at most as far (ties count
    against the query), found by binary search in the sorted row: sorting values is several
    times cheaper than an argsort of the full ranking. ``ordered``: ``dist`` sorted along rows,
    when the caller has it already.
    """
    ordered = np.sort(dist, axis=1) if ordered is None else ordered
    out = np.full(len(dist), np.nan)
    for i in range(len(dist)):
        rel = np.sort(dist[i][relevant[i]])
        if len(rel):
            ranks = np.searchsorted(ordered[i], rel, side="right")
            out[i] = float(np.mean(np.arange(1, len(rel) + 1) / ranks))
    return out


@torch.no_grad()
def retrieval_metrics(queries: Tensor, query_labels: Tensor, gallery: Tensor, gallery_labels: Tensor,
                      *, metric: Metric = "l2", ks: Sequence[int] = (10, 100),
                      chunk: int = 256) -> dict[str, float]:
    """precision@k for each k and mAP (over the full ranking of the gallery), class labels as
    relevance. Exact: every query is ranked against every gallery item (in float32; ties count
    against the query)."""
    q = torch.as_tensor(queries).float()
    g = torch.as_tensor(gallery).float()
    ql = torch.as_tensor(query_labels).long()
    gl = torch.as_tensor(gallery_labels).long()
    if len(q) != len(ql) or len(g) != len(gl):
        raise AevisionError("retrieval_metrics: features and labels differ in length")
    if q.shape[1] != g.shape[1]:
        raise AevisionError(f"retrieval_metrics: queries have {q.shape[1]} features, gallery {g.shape[1]}")
    ks = [k for k in ks if k <= len(g)]
    aps: list[np.ndarray] = []
    hits = {k: 0.0 for k in ks}
    g_labels = gl.numpy()
    for start in range(0, len(q), chunk):
        d = distances(q[start:start + chunk], g, metric).numpy()
        rel = g_labels[None, :] == ql[start:start + chunk].numpy()[:, None]
        ordered = np.sort(d, axis=1)
        aps.append(average_precision(d, rel, ordered))
        for k in ks:  # relevant items within the k nearest (the k-th distance as threshold)
            kth = ordered[:, k - 1:k]
            hits[k] += float(np.minimum((rel & (d <= kth)).sum(axis=1), k).sum() / k)
    ap = np.concatenate(aps)
    out: dict[str, float] = {f"precision@{k}": hits[k] / len(q) for k in ks}
    valid = ~np.isnan(ap)
    out["map"] = float(ap[valid].mean()) if valid.any() else float("nan")
    out["queries"] = len(q)
    out["queries_without_relevant"] = int((~valid).sum())
    return out
