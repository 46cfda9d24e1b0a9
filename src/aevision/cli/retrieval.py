"""``aevision index`` and ``aevision search``: nearest neighbours in a trained encoder's code space."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from aevision.cli.common import Parser, add_data_arguments, load_inputs, output_path, positive
from aevision.errors import AevisionError
from aevision.io import file_sha256

WEIGHTS = "model.safetensors"


def add_parser(sub: Any) -> None:
    p: Parser = sub.add_parser(
        "index", help="encode a gallery of images into a searchable FAISS index",
        description="Encode DATA (a dataset name such as mnist, or an image folder) with a trained "
        "model and write an index folder for 'aevision search'. Exact search by default; "
        "--kind ivf or hnsw for large galleries.")
    p.add_argument("data", metavar="DATA", help="dataset name (see 'aevision datasets') or image folder/file")
    p.add_argument("-m", "--model", required=True, help="model folder (from 'aevision pretrain')")
    p.add_argument("-o", "--out", required=True, metavar="INDEX", help="index folder to write")
    p.add_argument("--split", choices=("train", "val", "test"), default="train",
                   help="split of a dataset (default train: the whole official training set)")
    p.add_argument("--data-root", metavar="DIR", help="where datasets live (default $AEVISION_DATA)")
    p.add_argument("--limit", type=int, metavar="N", help="index only the first N images")
    p.add_argument("--seed", type=int, default=0, help="seed of the val split (default 0)")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--device", default="cpu")
    p.add_argument("--kind", choices=("flat", "ivf", "hnsw"), default="flat",
                   help="flat: exact (default); ivf: inverted lists; hnsw: graph (approximate)")
    p.add_argument("--metric", choices=("l2", "cosine"), default="l2")
    p.add_argument("--nlist", type=int, help="ivf: number of lists (default ~4 sqrt(N))")
    p.add_argument("--nprobe", type=int, default=8, help="ivf: lists visited per query (default 8)")
    p.add_argument("--hnsw-m", type=int, default=32, help="hnsw: links per node (default 32)")
    p.add_argument("--ef-search", type=int, default=64, help="hnsw: search beam (default 64)")
    p.add_argument("--threads", type=int, help="FAISS threads (default: all cores)")
    p.set_defaults(run=run_index)

    p = sub.add_parser(
        "search", help="find the nearest gallery images of query images in an index",
        description="Encode the query images with the index's model and print their k nearest "
        "gallery images with distances; -o writes them as JSON, --grid as a thumbnail grid.")
    p.add_argument("index", metavar="INDEX", help="index folder (from 'aevision index')")
    add_data_arguments(p)
    p.add_argument("-k", type=int, default=10, help="neighbours per query (default 10)")
    p.add_argument("-m", "--model", help="model folder, when it moved since indexing")
    p.add_argument("-o", "--out", metavar="FILE.json", help="write all results as JSON")
    p.add_argument("--grid", metavar="FILE.png", help="thumbnail grid: each row a query and its neighbours")
    p.add_argument("--grid-rows", type=int, default=8, help="queries shown in the grid (default 8)")
    p.add_argument("--nprobe", type=int, help="ivf: lists visited per query")
    p.add_argument("--ef-search", type=int, help="hnsw: search beam")
    p.add_argument("--threads", type=int, help="FAISS threads (default: all cores)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(run=run_search)


def weights_path(model: str | Path) -> Path:
    path = Path(model)
    return path if path.suffix == ".safetensors" else path / WEIGHTS


def run_index(args: argparse.Namespace) -> int:
    from aevision.api import encode, load
    from aevision.data.sources import SourceSpec, fingerprint, is_path, load_source
    from aevision.tasks.retrieval import GalleryIndex, set_threads

    positive(args, "--batch-size", "--threads")
    if args.threads is not None:
        set_threads(args.threads)
    model = load(args.model, args.device)
    from aevision.data import data_root

    local = is_path(args.data)
    data = str(Path(args.data).expanduser().resolve()) if local else args.data
    # a resolved data root, so that 'search --grid' finds the same images whatever $AEVISION_DATA says
    root = None if local else str(data_root(args.data_root).resolve())
    spec = SourceSpec(data, args.split, root, args.seed, args.limit)
    c, h, w = model.input_shape
    gallery = load_source(spec, c, (h, w))
    features = encode(model, gallery, args.batch_size, args.device)
    weights = weights_path(args.model)
    meta = {
        "model": {"path": str(Path(args.model).resolve()), "sha256": file_sha256(weights),
                  "name": model.spec.get("name"), "code_dim": model.code_dim},
        "source": {**spec.to_dict(), "image_shape": [c, h, w],
                   "gallery_sha256": fingerprint(gallery.images)},
        "classes": gallery.classes if gallery.labels is not None else None,
        "files": gallery.files,
    }
    index = GalleryIndex.build(features, kind=args.kind, metric=args.metric, labels=gallery.labels,
                               nlist=args.nlist, nprobe=args.nprobe, hnsw_m=args.hnsw_m,
                               ef_search=args.ef_search, meta=meta)
    index.save(args.out)
    print(f"indexed {len(index)} images of {args.data} ({args.kind}, {args.metric}, "
          f"{index.dim} features) -> {args.out}")
    return 0


def run_search(args: argparse.Namespace) -> int:
    from aevision.api import encode, load
    from aevision.tasks.retrieval import GalleryIndex, set_threads

    positive(args, "-k", "--grid-rows", "--threads")
    if args.threads is not None:
        set_threads(args.threads)
    out = output_path(args.out, (".json",)) if args.out else None
    grid = output_path(args.grid, (".png",), "--grid") if args.grid else None
    index = GalleryIndex.load(args.index)
    index.set_search_params(nprobe=args.nprobe, ef_search=args.ef_search)
    info = index.meta.get("model", {})
    model_path = args.model or info.get("path")
    if not model_path:
        raise AevisionError(f"{args.index}: the index does not name its model; pass --model")
    if info.get("sha256") and file_sha256(weights_path(model_path)) != info["sha256"]:
        raise AevisionError(f"{model_path}: not the model {args.index} was built with (weights "
                            f"differ); rebuild the index with 'aevision index'")
    model = load(model_path, args.device)
    queries = load_inputs(args, model)
    found = index.search(encode(model, queries, args.batch_size, args.device), args.k)
    results = [_result(index, queries, i, found) for i in range(len(queries))]
    _print(results, out)
    if out is not None:
        from aevision.io import write_json

        write_json(out, {"index": str(args.index), "k": int(found.ids.shape[1]),
                         "metric": index.meta["metric"], "kind": index.meta["kind"],
                         "queries": results})
        print(f"wrote {out} ({len(results)} queries)")
    if grid is not None:
        _grid(grid, index, queries, found, args.grid_rows)
        print(f"wrote {grid}")
    return 0


def _result(index: Any, queries: Any, i: int, found: Any) -> dict[str, Any]:
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


def _print(results: list[dict[str, Any]], out: Path | None, shown: int = 5) -> None:
    many = len(results) > 20
    for r in results[:shown] if many else results:
        label = f" (label {r['label']})" if "label" in r else ""
        print(f"query {r['query']}{label}:")
        for n in r["neighbours"]:
            extra = "".join(f"  {k} {n[k]}" for k in ("class", "file") if k in n)
            print(f"  {n['rank']:>3}. #{n['id']:<8} distance {n['distance']:.4f}{extra}")
    if many:
        rest = "in " + str(out) if out else "not shown; use -o FILE.json"
        print(f"... {len(results) - shown} more queries ({rest})")


def _grid(path: Path, index: Any, queries: Any, found: Any, rows: int) -> None:
    import torch

    from aevision.data.sources import SourceSpec, fingerprint, load_source
    from aevision.report.plots import image_grid, save_image

    src = index.meta.get("source") or {}
    if not src.get("data"):
        raise AevisionError("--grid: the index does not say where its gallery images are")
    c, h, w = src["image_shape"]
    gallery = load_source(SourceSpec.from_dict(src), c, (h, w))
    if src.get("gallery_sha256") and fingerprint(gallery.images) != src["gallery_sha256"]:
        raise AevisionError(f"--grid: the gallery images of {src['data']} changed since indexing; "
                            f"rebuild the index")
    n = min(rows, len(queries))
    q_imgs = queries.floats(slice(0, n))
    if q_imgs.shape[1:] != (c, h, w):
        raise AevisionError("--grid: query and gallery images differ in shape")
    lines = []
    for i in range(n):
        ids = [j for j in found.ids[i].tolist() if j >= 0]
        lines.append(torch.cat([q_imgs[i:i + 1], gallery.floats(torch.tensor(ids, dtype=torch.long))]))
    save_image(path, image_grid(lines, pad=2, scale=max(1, 64 // h)))
