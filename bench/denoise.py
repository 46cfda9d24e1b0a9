"""Claim: a denoising autoencoder restores images better than the noisy input and than TV.

Denoising autoencoders (the foundation's ``denoising`` regularizer on a fully convolutional
``conv`` model) are trained on corrupted training images and tested on test images corrupted
with a fixed seed, so every method sees the same noise:

- Fashion-MNIST: one blind model for Gaussian noise with sigma drawn in [0.1, 0.5] per image,
  tested at sigma 0.1 .. 0.5; one for salt-and-pepper noise; one for inpainting random 7x7
  blocks (about a quarter of the image);
- natural photos: one blind Gaussian model trained on Penn-Fudan crops, tested on the 24 Kodak
  images (whole 768x512 photos; the model is fully convolutional).

Against the noisy input and scikit-image's total-variation and non-local-means denoisers (NLM is
given the true sigma), a 3x3 median filter for salt-and-pepper, and biharmonic inpainting. Their
parameters are tuned on validation images, never on the test images.

    AEVISION_DATA=../shared/datasets python bench/denoise.py
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # no spinning threads on a shared machine

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent

from aevision.api import pretrain  # noqa: E402
from aevision.config import DataConfig  # noqa: E402
from aevision.data import Splits, load_dataset, to_float  # noqa: E402
from aevision.data.images import load_image  # noqa: E402
from aevision.io import write_json  # noqa: E402
from aevision.provenance import machine_info  # noqa: E402
from aevision.report.plots import reconstruction_grid  # noqa: E402
from aevision.tasks import classic_restore  # noqa: E402
from aevision.tasks.quality import psnr, ssim  # noqa: E402
from aevision.tasks.restore import Degradation, restore  # noqa: E402

SIGMAS = (0.1, 0.2, 0.3, 0.4, 0.5)
TV_WEIGHTS = (0.02, 0.04, 0.06, 0.08, 0.1, 0.13, 0.16, 0.2, 0.25, 0.3, 0.4)
NLM_FACTORS = (0.4, 0.6, 0.8, 1.0, 1.2)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-root", default=os.environ.get("AEVISION_DATA"))
    p.add_argument("--runs", default="runs/bench-denoise")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=6, help="Fashion-MNIST training epochs per model")
    p.add_argument("--test", type=int, default=1000, help="Fashion-MNIST test images used")
    p.add_argument("--val", type=int, default=200, help="validation images for tuning the baselines")
    p.add_argument("--kodak-epochs", type=int, default=3)
    p.add_argument("--kodak-sigmas", default="0.1,0.3,0.5")
    p.add_argument("--threads", type=int, default=2, help="torch threads (1 when sharing the cores)")
    p.add_argument("--noises", default="gaussian,salt_pepper,blocks",
                   help="Fashion-MNIST models to train and test (comma-separated subset)")
    p.add_argument("--skip", choices=("fmnist", "kodak"), action="append", default=[])
    p.add_argument("--out", default=str(ROOT / "results" / "denoise.json"))
    return p.parse_args()


def scores(clean: torch.Tensor, out: torch.Tensor) -> dict[str, float]:
    """Mean per-image PSNR and SSIM, plus the PSNR of the mean squared error over all images.

    An image the degradation leaves unchanged (a block of zeros over black background) has an
    infinite PSNR, which would make the per-image mean infinite; those images count as
    ``identical_images`` and are left out of the mean, and ``psnr_dataset`` (finite whenever any
    pixel differs) is the fair comparison for inpainting.
    """
    per_image = psnr(out, clean)
    finite = torch.isfinite(per_image)
    mse = (out.float() - clean.float()).pow(2).mean()
    return {"psnr": round(float(per_image[finite].mean()), 3) if finite.any() else float("nan"),
            "psnr_dataset": round(float(10 * torch.log10(1 / mse)), 3) if mse > 0 else float("nan"),
            "identical_images": int((~finite).sum()),
            "ssim": round(float(ssim(out, clean).mean()), 4)}


def train_dae(name: str, model: dict[str, Any], reg: dict[str, Any], splits: Splits, epochs: int,
              batch_size: int, runs: Path, seed: int) -> Any:
    """A denoising autoencoder, trained, or read back when this very run finished in ``runs/name``
    (the run lifecycle's key: config, data, version); its training info rides on the model."""
    cfg = {
        "seed": seed, "output_dir": str(runs / name), "model": model, "regularizers": [reg],
        "train": {"epochs": epochs, "batch_size": batch_size, "lr": 1e-3, "scheduler": "cosine",
                  "progress": False},
        "data": {"name": splits.train.name},
    }
    result = pretrain(cfg, data=splits, reuse=True)
    result.model.training_info = {  # type: ignore[attr-defined]
        "epochs": len(result.fit.history), "steps": result.fit.steps,
        "train_seconds": round(result.fit.train_seconds, 1), "wall_seconds": result.timing["wall_seconds"],
        "dir": str(result.out_dir),
        **({"reused": "trained by an earlier run of this script (same config)"} if result.reused else {})}
    return result.model


def evaluate(model: Any, clean: torch.Tensor, val_clean: torch.Tensor, degradation: Degradation,
             seed: int, grid: Path | None = None) -> dict[str, Any]:
    """aevision and the classical methods on the same corrupted test images."""
    noisy, holes = degradation.apply(clean, seed=seed)
    val_noisy, val_holes = degradation.apply(val_clean, seed=seed + 1)
    t = time.time()
    ours = restore(model, noisy, holes)
    row: dict[str, Any] = {"degradation": degradation.to_dict(), "images": len(clean),
                           "noisy": scores(clean, noisy), "aevision": scores(clean, ours),
                           "aevision_seconds": round(time.time() - t, 2)}
    shown = {"noisy": noisy[:10], "aevision": ours[:10]}
    if degradation.holes:
        assert holes is not None and val_holes is not None
        row["biharmonic"] = scores(clean, bh := classic_restore.biharmonic(noisy, holes))
        shown["biharmonic"] = bh[:10]
    else:
        weight, tried = classic_restore.tune(classic_restore.tv, TV_WEIGHTS, val_clean, val_noisy, "weight")
        row["tv"] = {**scores(clean, tv := classic_restore.tv(noisy, weight)), "weight": weight,
                     "validation_psnr": tried}
        shown["tv"] = tv[:10]
        if degradation.noise == "gaussian":
            factor, tried = classic_restore.tune(classic_restore.nlm, NLM_FACTORS, val_clean[:50],
                                                 val_noisy[:50], "h_factor", sigma=degradation.sigma)
            row["nlm"] = {**scores(clean, nl := classic_restore.nlm(noisy, degradation.sigma, factor)),
                          "h_factor": factor, "validation_psnr": tried}
            shown["nlm"] = nl[:10]
        else:
            row["median"] = scores(clean, med := classic_restore.median(noisy))
            shown["median"] = med[:10]
    if grid is not None:
        reconstruction_grid(grid, clean[:10], shown)
    return row


def flat_keys(tag: str, row: dict[str, Any]) -> dict[str, float]:
    """``psnr_<method>_<tag>`` / ``ssim_<method>_<tag>`` for the headline keys of the issue."""
    out = {}
    for method, vals in row.items():
        if isinstance(vals, dict) and "psnr" in vals:
            out[f"psnr_{method}_{tag}"] = vals["psnr"]
            out[f"ssim_{method}_{tag}"] = vals["ssim"]
    return out


def fmnist(args: argparse.Namespace, root: Path, runs: Path, results: dict[str, Any]) -> None:
    splits = load_dataset(DataConfig(name="fashion-mnist", root=str(root), download=False,
                                     val_fraction=args.val / 60000), args.seed)
    assert splits.val is not None and splits.test is not None
    train = Splits(train=splits.train, test=None, val=None)
    clean = splits.test.floats()[: args.test]
    val_clean = splits.val.floats()[: args.val]
    arch = {"name": "conv", "channels": [64, 128], "blocks_per_stage": 2, "code_dim": None,
            "code_activation": "relu"}
    wanted = set(args.noises.split(","))
    unknown = wanted - {"gaussian", "salt_pepper", "blocks"}
    if unknown:
        sys.exit(f"--noises: unknown {sorted(unknown)}; expected gaussian, salt_pepper, blocks")
    regs = {"gaussian": ("fmnist-gaussian", {"name": "denoising", "noise": "gaussian", "sigma": 0.1,
                                             "sigma_max": 0.5}),
            "salt_pepper": ("fmnist-salt-pepper", {"name": "denoising", "noise": "salt_pepper", "p": 0.2}),
            "blocks": ("fmnist-inpaint", {"name": "denoising", "noise": "blocks", "p": 0.25, "block": 7})}
    models = {k: train_dae(name, arch, reg, train, args.epochs, 128, runs, args.seed)
              for k, (name, reg) in regs.items() if k in wanted}
    rows: dict[str, Any] = {}
    flat: dict[str, float] = {}
    for sigma in SIGMAS if "gaussian" in models else ():
        tag = f"sigma{sigma:g}"
        grid = ROOT / "results" / "denoise_fmnist_sigma0.3.png" if sigma == 0.3 else None
        rows[tag] = evaluate(models["gaussian"], clean, val_clean, Degradation("gaussian", sigma=sigma),
                             args.seed, grid)
        flat.update(flat_keys(tag, rows[tag]))
        shown = {k: v for k, v in flat.items() if tag in k}
        print(f"fashion-mnist {tag}: {json.dumps(shown)}", file=sys.stderr)
    for p in (0.1, 0.2) if "salt_pepper" in models else ():
        tag = f"salt_pepper_p{p:g}"
        rows[tag] = evaluate(models["salt_pepper"], clean, val_clean, Degradation("salt_pepper", p=p),
                             args.seed)
        flat.update(flat_keys(tag, rows[tag]))
    if "blocks" in models:
        tag = "inpaint_blocks7_p0.25"
        rows[tag] = evaluate(models["blocks"], clean, val_clean, Degradation("blocks", p=0.25, block=7),
                             args.seed, ROOT / "results" / "inpaint_fmnist.png")
        flat.update(flat_keys(tag, rows[tag]))
    results.update(flat)  # headline keys, Fashion-MNIST
    results["fashion_mnist"] = {
        "rows": rows, "models": {k: m.training_info for k, m in models.items()},
        "architecture": arch, "test_images": len(clean), "validation_images": len(val_clean)}


def kodak(args: argparse.Namespace, root: Path, runs: Path, results: dict[str, Any]) -> None:
    crops = load_dataset(DataConfig(
        name=f"crops:{root / 'PennFudanPed' / 'PNGImages'}", channels=3, val_fraction=0.0,
        options={"size": 64, "per_image": 48, "min_scale": 0.5, "seed": args.seed}), args.seed)
    arch = {"name": "conv", "channels": [64, 96, 128], "blocks_per_stage": 2, "code_dim": None,
            "code_activation": "relu"}
    reg = {"name": "denoising", "noise": "gaussian", "sigma": 0.1, "sigma_max": 0.5}
    model = train_dae("kodak-gaussian", arch, reg, crops, args.kodak_epochs, 16, runs, args.seed)
    photos = [load_image(p, 3) for p in sorted((root / "kodak").glob("kodim*.png"))]
    # landscape and portrait photos are evaluated in two batches of equal size
    val_clean = to_float(crops.train.images[torch.randperm(len(crops.train),
                                                           generator=torch.Generator().manual_seed(9))[:40]])
    rows: dict[str, Any] = {}
    flat: dict[str, float] = {}
    for sigma in (float(s) for s in args.kodak_sigmas.split(",")):
        tag = f"sigma{sigma:g}"
        parts = []
        for shape in sorted({tuple(p.shape) for p in photos}):
            group = torch.stack([to_float(p) for p in photos if tuple(p.shape) == shape])
            grid = ROOT / "results" / "denoise_kodak_sigma0.3.png" if sigma == 0.3 and not parts else None
            parts.append((len(group), evaluate(model, group, val_clean, Degradation("gaussian", sigma=sigma),
                                               args.seed, grid)))
        row = _merge(parts)
        rows[tag] = row
        flat.update({f"kodak_{k}": v for k, v in flat_keys(tag, row).items()})
        print(f"kodak {tag}: {json.dumps({k: v for k, v in flat.items() if tag in k})}", file=sys.stderr)
    results.update(flat)
    results["kodak"] = {"rows": rows, "model": model.training_info, "architecture": arch,
                        "train_data": {"photos": "PennFudanPed/PNGImages", "crops": len(crops.train),
                                       "crop": 64}, "test_images": len(photos)}


def _merge(parts: list[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
    """Image-weighted means of the per-batch scores (tuned parameters listed per batch)."""
    total = sum(n for n, _ in parts)
    merged: dict[str, Any] = {"images": total, "degradation": parts[0][1]["degradation"], "batches": []}
    for method, vals in parts[0][1].items():
        if isinstance(vals, dict) and "psnr" in vals:
            merged[method] = {k: round(sum(n * r[method][k] for n, r in parts) / total, 4)
                              for k in ("psnr", "ssim")}
    merged["batches"] = [{"images": n, **{m: v for m, v in r.items() if isinstance(v, dict)}}
                         for n, r in parts]
    return merged


def main() -> None:
    args = parse_args()
    torch.set_num_threads(max(1, args.threads))
    if not args.data_root:
        sys.exit("set AEVISION_DATA or --data-root to the shared datasets folder")
    root, runs = Path(args.data_root), Path(args.runs)
    results: dict[str, Any] = {
        "command": "python " + " ".join(sys.argv), "config": vars(args),
        "machine": {**machine_info(), "note": "2 CPU cores shared with other jobs: timings are indicative"},
    }
    started = time.time()
    if "fmnist" not in args.skip:
        fmnist(args, root, runs, results)
    if "kodak" not in args.skip:
        kodak(args, root, runs, results)
    if "psnr_aevision_sigma0.3" in results:
        gain = results["psnr_aevision_sigma0.3"] - results["psnr_noisy_sigma0.3"]
        results["target_sigma0.3"] = {
            "gain_over_noisy_db": round(gain, 3),
            "margin_over_tv_db": round(results["psnr_aevision_sigma0.3"] - results["psnr_tv_sigma0.3"], 3),
            "met": gain >= 6 and results["psnr_aevision_sigma0.3"] > results["psnr_tv_sigma0.3"]}
    results["wall_seconds"] = round(time.time() - started, 1)
    write_json(args.out, results)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
