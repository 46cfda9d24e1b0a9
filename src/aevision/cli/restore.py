"""``aevision restore``: denoise or inpaint a folder of images with a denoising autoencoder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from aevision.cli.common import Parser


def add_parser(sub: Any) -> None:
    p: Parser = sub.add_parser(
        "restore", help="denoise or inpaint images with a denoising autoencoder",
        description="Restore degraded images: --task denoise cleans noisy images; --task inpaint "
        "fills the transparent pixels (alpha 0) of the inputs. With --simulate, the inputs are "
        "clean images that are first degraded (seeded), and PSNR/SSIM before and after are "
        "written to OUT/metrics.json. Writes the restored images and OUT/grid.png (before/after).")
    p.add_argument("model", help="model folder (trained with --reg denoising:...)")
    p.add_argument("inputs", nargs="+", metavar="IMAGES", help="image files or folders")
    p.add_argument("--task", choices=("denoise", "inpaint"), required=True)
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--simulate", metavar="NOISE[:k=v,...]",
                   help="degrade clean inputs first: gaussian:sigma=0.3, salt_pepper:p=0.1, "
                   "blocks:p=0.25,block=8 (inpaint), masking:p=0.5 (inpaint)")
    p.add_argument("--seed", type=int, default=0, help="seed of --simulate's noise (default 0)")
    p.add_argument("-n", "--num", type=int, default=8, help="images shown in the grid (default 8)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from aevision.api import load
    from aevision.cli.common import positive
    from aevision.cli.compress import image_paths
    from aevision.data.images import BadImage, load_image, open_image
    from aevision.data.imageset import to_float, to_uint8
    from aevision.errors import AevisionError
    from aevision.io import write_json
    from aevision.provenance import machine_info
    from aevision.report.plots import reconstruction_grid, save_image
    from aevision.tasks.quality import psnr, ssim
    from aevision.tasks.restore import Degradation, restore

    positive("--num", args.num)
    model = load(args.model, args.device)
    channels = model.input_shape[0]
    degradation = Degradation.parse(args.simulate) if args.simulate else None
    if degradation is not None and degradation.holes != (args.task == "inpaint"):
        raise AevisionError(f"--simulate {args.simulate}: a {'hole' if degradation.holes else 'noise'} "
                            f"corruption does not fit --task {args.task}")
    out = Path(args.out)
    rows: dict[str, list[torch.Tensor]] = {"input": [], "restored": []}
    clean_rows: list[torch.Tensor] = []
    metrics: list[dict[str, Any]] = []
    paths = image_paths(args.inputs)
    for k, path in enumerate(paths):
        try:
            image = to_float(load_image(path, channels)).unsqueeze(0)
            holes = None
            if degradation is None and args.task == "inpaint":
                pil = open_image(path)
                if "A" in pil.getbands():
                    alpha = torch.from_numpy(np.asarray(pil.getchannel("A")).copy())
                    holes = (alpha == 0)[None, None]
                    image = image.masked_fill(holes, 0.0)
        except BadImage as e:
            raise AevisionError(f"{path}: {e}") from None
        clean = None
        if degradation is not None:
            clean = image
            image, holes = degradation.apply(clean, seed=args.seed + k)
        restored = restore(model, image, holes)
        save_image(out / f"{path.stem}.png", _hwc(to_uint8(restored[0])))
        if clean is not None:
            metrics.append({"file": str(path),
                            "psnr_degraded": float(psnr(image, clean)[0]),
                            "psnr_restored": float(psnr(restored, clean)[0]),
                            "ssim_degraded": float(ssim(image, clean)[0]),
                            "ssim_restored": float(ssim(restored, clean)[0])})
        if len(rows["input"]) < args.num:
            size = rows["input"][0].shape[-2:] if rows["input"] else image.shape[-2:]
            rows["input"].append(_fit(image[0], size))
            rows["restored"].append(_fit(restored[0], size))
            if clean is not None:
                clean_rows.append(_fit(clean[0], size))
    grid = {"restored": torch.stack(rows["restored"])}
    originals = torch.stack(rows["input"])
    if clean_rows:  # clean / degraded / restored
        grid = {"degraded": originals, **grid}
        originals = torch.stack(clean_rows)
    reconstruction_grid(out / "grid.png", originals, grid)
    print(f"wrote {len(paths)} restored images and {out / 'grid.png'}")
    if metrics:
        mean = {k: sum(m[k] for m in metrics) / len(metrics) for k in metrics[0] if k != "file"}
        write_json(out / "metrics.json", {
            "command": " ".join(["aevision", *sys.argv[1:]]), "task": args.task, "model": str(args.model),
            "degradation": degradation.to_dict() if degradation else None, "seed": args.seed,
            "mean": mean, "images": metrics, "machine": machine_info()})
        print(f"{degradation.label() if degradation else ''}: PSNR {mean['psnr_degraded']:.2f} -> "
              f"{mean['psnr_restored']:.2f} dB, SSIM {mean['ssim_degraded']:.3f} -> "
              f"{mean['ssim_restored']:.3f}")
    return 0


def _hwc(img: Any) -> Any:
    arr = img.permute(1, 2, 0).numpy()
    return arr[:, :, 0] if arr.shape[2] == 1 else arr


def _fit(img: Any, size: Any) -> Any:
    """Resize for display only, so that images of different sizes share the grid."""
    import torch.nn.functional as F

    if tuple(img.shape[-2:]) == tuple(size):
        return img
    return F.interpolate(img[None], size=tuple(size), mode="bilinear", antialias=True,
                         align_corners=False)[0].clamp(0, 1)
