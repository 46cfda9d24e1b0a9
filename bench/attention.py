"""Which attention the cifar10 preset's ViT should use on this machine: torch's fused kernel or the
formula (softmax(q k^T / sqrt(d)) v as two batched matmuls), in fp32 and under bf16 autocast.

For the preset's ``mae`` (its model section as the preset has it), two training steps: the MAE's
pretraining step (``model(x)["loss"]``, batch 256, only the kept patches through the encoder) and a
fine-tuning step (the encoder's pooled tokens -> a linear head -> cross-entropy, batch 128, every
patch), each with AdamW. The two attentions alternate round by round in one process on the same
random images (so the machine's load hits both alike); the best round of each is reported as
images/s, with their ratio and the first step's loss under each (the same math: equal up to
rounding). ``models/mae.py``'s ``fused_pays`` is what this measured.

    python bench/attention.py                 # writes bench/results/attention.json
    python bench/attention.py --threads 2 --rounds 5
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

import common
from aevision.benchmark import load_benchmark
from aevision.models import build_model

STEPS = {"pretrain": 256, "finetune": 128}  # step -> batch size
PRECISIONS = ("fp32", "bf16")


def make_step(options: dict[str, Any], kind: str, attention: str, precision: str,
              seed: int = 0) -> Callable[[], float]:
    """One AdamW step of ``kind`` with an MAE of ``options`` at ``attention``; returns the loss.
    Seeded here, so both attentions start from the same weights, images and first mask."""
    torch.manual_seed(seed)
    model = build_model("mae", (3, 32, 32), options)
    model.encoder.attention = model.decoder.attention = attention
    head = nn.Linear(model.encoder.norm.normalized_shape[0], 10)
    opt = torch.optim.AdamW([*model.parameters(), *head.parameters()], lr=1e-4, fused=True)
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(STEPS[kind], 3, 32, 32, generator=gen)
    y = torch.randint(0, 10, (STEPS[kind],), generator=gen)

    def step() -> float:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            if kind == "pretrain":
                loss = model(x)["loss"]
            else:
                loss = nn.functional.cross_entropy(head(model.encoder(x)).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step


def compare(options: dict[str, Any], kind: str, precision: str, rounds: int) -> dict[str, Any]:
    """Fused vs formula for one step kind and precision: best-round images/s, ratio, first losses."""
    steps, first = {}, {}
    for attention in ("fused", "formula"):
        steps[attention] = make_step(options, kind, attention, precision)
        first[attention] = round(steps[attention](), 5)
    best = {a: float("inf") for a in steps}
    for _ in range(rounds):
        for attention, step in steps.items():
            started = time.perf_counter()
            step()
            step()
            best[attention] = min(best[attention], (time.perf_counter() - started) / 2)
    batch = STEPS[kind]
    return {"fused_images_per_s": round(batch / best["fused"], 1),
            "formula_images_per_s": round(batch / best["formula"], 1),
            "formula_speedup": round(best["fused"] / best["formula"], 3),
            "first_loss": first}


def main() -> None:
    p = common.parser(__doc__, "attention.json")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds of two steps each")
    args = p.parse_args()
    torch.set_num_threads(max(1, args.threads))
    started = time.time()
    result: dict[str, Any] = {"question": "torch's fused attention kernel or the formula, for the "
                                          "cifar10 preset's ViT on this CPU"}
    spec = load_benchmark("cifar10").models["mae"]["model"]
    options = {k: v for k, v in spec.items() if k != "name"}
    for kind in STEPS:
        for precision in PRECISIONS:
            result[f"{kind}_{precision}"] = compare(options, kind, precision, args.rounds)
            print(kind, precision, result[f"{kind}_{precision}"], flush=True)
    result |= {"threads": args.threads, "rounds": args.rounds, "command": common.command("attention.py"),
               **common.provenance(started, common.SHARED, load_average=True)}
    common.publish(args.out, result, indent=1)


if __name__ == "__main__":
    main()
