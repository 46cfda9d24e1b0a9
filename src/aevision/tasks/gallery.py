"""Indexing a gallery and searching it with query images: what ``aevision index`` and ``aevision
search`` run, over :class:`~aevision.tasks.retrieval.GalleryIndex`.

An index records the model (path and weights' SHA-256) and the gallery's source (a dataset or a
resolved folder, and a fingerprint of its images), so a search refuses other weights and a grid
refuses a gallery that changed since indexing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from aevision.data import data_root
from aevision.data.imageset import ImageSet
from aevision.data.sources import SourceSpec, Split, fingerprint, is_path, load_source, resolved
from aevision.errors import AevisionError
from aevision.io import file_sha256, refuse_existing, write_json
from aevision.models import Autoencoder
from aevision.models.inference import encode
from aevision.models.io import WEIGHTS, load_model, model_files, pretraining_carve
from aevision.tasks.retrieval import INDEX_FILE, LABELS_FILE, META_FILE, GalleryIndex, Neighbours
from aevision.tasks.streamed_features import stream_fingerprint, streamed_codes, streamed_input


def index_gallery(model_path: str | os.PathLike[str], data: str, out: str | os.PathLike[str], *,
                  split: Split = "train", root: str | None = None, seed: int = 0, limit: int | None = None,
                  batch_size: int = 512, device: str = "cpu", memory: float | None = None, workers: int = 2,
                  overwrite: bool = False, **options: Any) -> GalleryIndex:
    """Encode ``data`` (a dataset name or an image folder/file) with the model and save a
    :class:`GalleryIndex` (``options``: kind, metric, nlist, nprobe, hnsw_m, ef_search) to ``out``.
    One folder or ``shards:`` set whose decoded images exceed ``memory`` GiB (default a quarter
    of RAM) is streamed: only its codes are held. An index already in ``out`` is replaced only with
    ``overwrite``; a model's folder never is."""
    out = Path(out)
    if (out / WEIGHTS).exists():
        raise AevisionError(f"-o {out}: a model's folder; give the index a folder of its own")
    refuse_existing([out / name for name in (INDEX_FILE, META_FILE, LABELS_FILE)], out, overwrite=overwrite)
    model = load_model(model_path, device)
    # a resolved data root, so that 'search --grid' finds the same images whatever $AEVISION_DATA says
    root = None if is_path(data) else str(data_root(root).resolve())
    spec = SourceSpec(resolved(data), split, root, seed, limit)
    carve = None if is_path(data) else pretraining_carve(model_path, data)
    if carve is not None:  # the dataset as the model's pretraining built it; val: what it held out
        if carve.fraction == 0 and split == "val":
            raise AevisionError(f"--split val: the model was pretrained on all of {data}'s training "
                                f"images (data.val_fraction 0), so it held out none")
        spec = replace(spec, carve=carve)
    c, h, w = model.input_shape
    stream = None if limit is not None else streamed_input(  # stretched, as load_source does in memory
        None if is_path(data) else data, [data] if is_path(data) else [], split, (c, h, w), memory, "stretch")
    if stream is not None:  # larger than memory: the codes, never the images
        features, files, labels = streamed_codes(model, stream, batch_size=batch_size, device=device,
                                                 workers=workers)
        sha, classes = stream_fingerprint(stream), stream.classes()
    else:
        gallery = load_source(spec, c, (h, w))
        features = encode(model, gallery, batch_size, device)
        files, labels, classes = gallery.files, gallery.labels, gallery.classes
        sha = fingerprint(gallery.images)
    meta = {
        "model": {"path": str(Path(model_path).resolve()), "sha256": file_sha256(model_files(model_path)[1]),
                  "name": model.spec.get("name"), "code_dim": model.code_dim},
        "source": {**spec.to_dict(), "image_shape": [c, h, w], "gallery_sha256": sha,
                   **({"streamed": True} if stream is not None else {})},
        "classes": classes if labels is not None else None,
        "files": files,
    }
    index = GalleryIndex.build(features, labels=labels, meta=meta, **options)
    index.save(out)
    return index


def index_model(index: GalleryIndex, where: str | os.PathLike[str], model_path: str | None = None,
                device: str = "cpu") -> Autoencoder:
    """The model an index was built with (from ``model_path`` when it moved); other weights are
    refused."""
    info = index.meta.get("model", {})
    model_path = model_path or info.get("path")
    if not model_path:
        raise AevisionError(f"{where}: the index does not name its model; pass --model")
    if info.get("sha256") and file_sha256(model_files(model_path)[1]) != info["sha256"]:
        raise AevisionError(f"{model_path}: not the model {where} was built with (weights "
                            f"differ); rebuild the index with 'aevision index'")
    return load_model(model_path, device)


@dataclass
class SearchResults:
    """Each query's neighbours (``results``: query, label, neighbours with rank, id, distance,
    label, class, file) and the raw ``found`` ids and distances."""

    index: GalleryIndex
    queries: ImageSet
    found: Neighbours
    results: list[dict[str, Any]]

    def save_json(self, path: str | os.PathLike[str], index_path: str | os.PathLike[str]) -> None:
        write_json(path, {"index": str(index_path), "k": int(self.found.ids.shape[1]),
                          "metric": self.index.meta["metric"], "kind": self.index.meta["kind"],
                          "queries": self.results})


def search_gallery(index: GalleryIndex, model: Autoencoder, queries: ImageSet, k: int = 10,
                   batch_size: int = 512, device: str = "cpu") -> SearchResults:
    """The ``k`` nearest gallery images of every query (a file given twice, e.g. by name and
    inside a folder, is searched once)."""
    queries = distinct_files(queries)
    found = index.search(encode(model, queries, batch_size, device), k)
    return SearchResults(index, queries, found, [_result(index, queries, i, found)
                                                 for i in range(len(queries))])


def distinct_files(images: ImageSet) -> ImageSet:
    """``images`` without the repeats of a file (the same path once resolved); the first is kept."""
    first: dict[Path, int] = {}
    for i, f in enumerate(images.files or []):
        first.setdefault(Path(f).resolve(), i)
    keep = sorted(first.values())
    return images.subset(keep) if images.files and len(keep) < len(images) else images


def _result(index: GalleryIndex, queries: ImageSet, i: int, found: Neighbours) -> dict[str, Any]:
    classes = index.meta.get("classes")
    files = index.meta.get("files")
    q: dict[str, Any] = {"query": queries.files[i] if queries.files else i}
    if queries.labels is not None:
        q["label"] = int(queries.labels[i])
    neighbours = []
    for rank, (j, d) in enumerate(zip(found.ids[i].tolist(), found.distances[i].tolist(),
                                      strict=True), start=1):
        if j < 0:
            continue
        n: dict[str, Any] = {"rank": rank, "id": j, "distance": round(float(d), 6)}
        if index.labels is not None:
            n["label"] = int(index.labels[j])
            if classes:
                n["class"] = classes[n["label"]]
        if files:
            n["file"] = files[j]
        neighbours.append(n)
    q["neighbours"] = neighbours
    return q


def save_search_grid(path: str | os.PathLike[str], found: SearchResults, rows: int) -> None:
    """A thumbnail grid: each row a query and its neighbours, read again from the index's gallery
    source (which must not have changed since indexing)."""
    from aevision.report.plots import image_grid, save_image

    src = found.index.meta.get("source") or {}
    if not src.get("data"):
        raise AevisionError("--grid: the index does not say where its gallery images are")
    c, h, w = src["image_shape"]
    gallery = _gallery_floats(found.index, src)
    n = min(rows, len(found.queries))
    q_imgs = found.queries.floats(slice(0, n))
    if q_imgs.shape[1:] != (c, h, w):
        raise AevisionError("--grid: query and gallery images differ in shape")
    lines = []
    for i in range(n):
        ids = [j for j in found.found.ids[i].tolist() if j >= 0]
        lines.append(torch.cat([q_imgs[i:i + 1], gallery(ids)]))
    save_image(path, image_grid(lines, pad=2, scale=max(1, 64 // h)))


def _gallery_floats(index: GalleryIndex, src: dict[str, Any]) -> Any:
    """``ids -> (n, C, H, W) floats`` of the gallery: loaded whole and checked against its
    fingerprint, or, for a streamed gallery (larger than memory), each neighbour read from its file."""
    c, h, w = src["image_shape"]
    if src.get("streamed"):
        from aevision.data.images import read_image
        from aevision.data.imageset import to_float

        files = index.meta.get("files") or []
        return lambda ids: to_float(torch.stack([read_image(files[j], c, (h, w)) for j in ids]))
    gallery = load_source(SourceSpec.from_dict(src), c, (h, w))
    if src.get("gallery_sha256") and fingerprint(gallery.images) != src["gallery_sha256"]:
        raise AevisionError(f"--grid: the gallery images of {src['data']} changed since indexing; "
                            f"rebuild the index")
    return lambda ids: gallery.floats(torch.tensor(ids, dtype=torch.long))
