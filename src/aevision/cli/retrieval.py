"""``aevision index`` and ``aevision search``: nearest neighbours in a trained encoder's code space."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from aevision.cli.common import Parser, add_data_arguments, model_inputs, named_rows, output_path, positive
from aevision.validation import plural


def add_parser(sub: Any) -> None:
    p: Parser = sub.add_parser(
        "index", help="encode a gallery of images into a searchable FAISS index",
        description="Encode DATA (a dataset name such as mnist, or an image folder) with a trained "
        "model and write an index folder for 'aevision search'. Images of another size than the "
        "model's are stretched to it. Exact search by default; --kind ivf or hnsw for large galleries.")
    p.add_argument("data", metavar="DATA", help="dataset name (see 'aevision datasets') or image folder/file")
    p.add_argument("-m", "--model", required=True, help="model folder (from 'aevision pretrain')")
    p.add_argument("-o", "--out", required=True, metavar="INDEX", help="index folder to write")
    p.add_argument("--overwrite", action="store_true", help="replace an index already in INDEX")
    p.add_argument("--split", choices=("train", "val", "test"), default="train",
                   help="split of a dataset (default train: the whole official training set; val: the "
                   "images the model's pretraining held out when DATA is what it pretrained on)")
    p.add_argument("--data-root", metavar="DIR", help="where datasets live (default $AEVISION_DATA)")
    p.add_argument("--limit", type=int, metavar="N", help="index only N images: a folder's first N "
                   "files, or N of a dataset's drawn with --seed")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the val split and of --limit's draw (default 0)")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--device", default="cpu")
    p.add_argument("--memory", type=float, metavar="GIB",
                   help="one folder or shards:PATH whose decoded images exceed this is streamed: only its "
                   "codes are held (default: a quarter of RAM)")
    p.add_argument("--workers", type=int, default=2, help="loader processes when streaming (default 2)")
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


def run_index(args: argparse.Namespace) -> int:
    from aevision.tasks.gallery import index_gallery
    from aevision.tasks.retrieval import set_threads

    positive(args, "--batch-size", "--threads")
    if args.threads is not None:
        set_threads(args.threads)
    index = index_gallery(args.model, args.data, args.out, split=args.split, root=args.data_root,
                          seed=args.seed, limit=args.limit, batch_size=args.batch_size, device=args.device,
                          memory=args.memory, workers=args.workers, kind=args.kind, metric=args.metric,
                          nlist=args.nlist, nprobe=args.nprobe, hnsw_m=args.hnsw_m, ef_search=args.ef_search,
                          overwrite=args.overwrite)
    print(f"indexed {plural(len(index), 'image')} of {args.data} ({args.kind}, {args.metric}, "
          f"{index.dim} features) -> {args.out}")
    return 0


def run_search(args: argparse.Namespace) -> int:
    from aevision.tasks.gallery import index_model, save_search_grid, search_gallery
    from aevision.tasks.retrieval import GalleryIndex, set_threads

    positive(args, "-k", "--grid-rows", "--threads")
    if args.threads is not None:
        set_threads(args.threads)
    out = output_path(args.out, (".json",)) if args.out else None
    grid = output_path(args.grid, (".png",), "--grid") if args.grid else None
    index = GalleryIndex.load(args.index)
    index.set_search_params(nprobe=args.nprobe, ef_search=args.ef_search)
    model = index_model(index, args.index, args.model, args.device)
    queries = named_rows(model_inputs(args, model, args.model or index.meta.get("model", {}).get("path")))
    found = search_gallery(index, model, queries, args.k, args.batch_size, args.device)
    _print(found.results, out)
    if out is not None:
        found.save_json(out, args.index)
        print(f"wrote {out} ({plural(len(found.results), 'query', 'queries')})")
    if grid is not None:
        save_search_grid(grid, found, args.grid_rows)
        print(f"wrote {grid}")
    return 0


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
