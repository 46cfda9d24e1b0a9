"""The masked autoencoder: masking, the masked-patch loss, shapes, saving, regularizers, bf16,
layer-wise lr decay, and a tiny pretrain + probe on digits (bundled with scikit-learn: offline)."""

from __future__ import annotations

import pytest
import torch

from aevision.errors import AevisionError, ConfigError
from aevision.models import build_model, load_model, save_model
from aevision.models.mae import MaskedAutoencoder, patchify, random_masking, unpatchify
from aevision.tasks.features import FeatureConfig, FeatureEncoder, extract
from aevision.tasks.finetune import Classifier
from aevision.tasks.segmentation.model import strip_head
from conftest import tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = {"patch_size": 2, "width": 16, "depth": 2, "heads": 2, "decoder_width": 8,
         "decoder_depth": 1, "decoder_heads": 2}


def small(pool: str = "mean", regs: list | None = None, **options) -> MaskedAutoencoder:
    return build_model("mae", (1, 8, 8), {**SMALL, "pool": pool, **options}, regs or [])


def test_patchify_round_trip_and_order():
    x = torch.rand(2, 3, 8, 12)
    patches = patchify(x, 4)
    assert patches.shape == (2, 6, 4 * 4 * 3)
    assert torch.equal(unpatchify(patches, 4, (3, 8, 12)), x)
    # row-major: patch 1 is the top row's second patch, each patch (p, p, C) flattened
    assert torch.equal(patches[0, 1], x[0, :, :4, 4:8].permute(1, 2, 0).flatten())


@pytest.mark.parametrize("pool", ["mean", "cls"])
def test_the_encoder_sees_exactly_the_kept_patches(pool):
    model = small(pool).eval()
    torch.manual_seed(3)
    kept, restore = random_masking(4, 16, model.keep, torch.device("cpu"))
    assert model.keep == 4 and kept.shape == (4, 4)  # mask ratio 0.75 of 16 patches
    assert all(sorted(row.tolist()) == list(range(16)) for row in restore)  # a permutation each
    assert torch.equal(restore.argsort(1)[:, :4], kept)  # restore puts [kept, masked] back in order
    x = torch.rand(4, 1, 8, 8)
    tokens = model.encoder.forward_visible(x, kept)
    assert tokens.shape == (4, 4 + (pool == "cls"), 16)
    mask = torch.ones(4, 16).scatter(1, kept, 0.0)
    pixel_mask = unpatchify(mask.unsqueeze(-1).expand(-1, -1, 4), 2, (1, 8, 8))
    changed_masked = x + pixel_mask * torch.rand_like(x)
    assert torch.allclose(model.encoder.forward_visible(changed_masked, kept), tokens)
    changed_kept = x + (1 - pixel_mask) * torch.rand_like(x)
    assert not torch.allclose(model.encoder.forward_visible(changed_kept, kept), tokens)


@pytest.mark.parametrize("norm_pix", [False, True])
def test_the_loss_covers_exactly_the_masked_patches(norm_pix):
    model = small(norm_pix_loss=norm_pix)
    x = torch.rand(3, 1, 8, 8)
    torch.manual_seed(5)
    kept, _ = random_masking(3, 16, model.keep, torch.device("cpu"))  # what forward will draw
    preds = []

    def keep_prediction(module, inputs, out):
        out.retain_grad()
        preds.append(out)

    model.decoder.register_forward_hook(keep_prediction)
    torch.manual_seed(5)
    terms = model(x)
    terms["loss"].backward()
    masked = torch.ones(3, 16, dtype=torch.bool).scatter(1, kept, False)
    touched = preds[0].grad.abs().sum(-1) > 0
    assert torch.equal(touched, masked)
    target = patchify(x, 2)
    if norm_pix:
        target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
    per_patch = (preds[0].detach() - target).pow(2).mean(-1)
    assert torch.allclose(terms["recon"], per_patch[masked].mean())


@pytest.mark.parametrize("pool", ["mean", "cls"])
def test_shapes_features_and_what_mae_refuses(pool):
    model = small(pool).eval()
    x = torch.rand(5, 1, 8, 8)
    assert model.encode(x).shape == (5, 16)
    recon = model.reconstruct(x)
    assert recon.shape == x.shape
    same = (patchify(recon, 2) == patchify(x, 2)).all(-1)  # kept patches pass unchanged
    assert (same.sum(1) >= model.keep).all()
    with pytest.raises(AevisionError, match="cannot decode codes"):
        model.decode(model.encode(x))
    feats = FeatureEncoder(model)
    assert feats.dim == 16 and extract(feats, x).shape == (5, 16)


@pytest.mark.parametrize("pool", ["mean", "cls"])
def test_stage_features_are_each_blocks_patch_tokens_on_the_grid(pool):
    model = small(pool, depth=3).eval()
    x = torch.rand(4, 1, 8, 8)
    maps = model.encoder.block_maps(x)
    assert [m.shape for m in maps] == [(4, 16, 4, 4)] * 3  # one per block, the 4 x 4 patch grid
    tokens = model.encoder.forward_visible(x)[:, 1 if pool == "cls" else 0:]  # normed output tokens
    assert torch.allclose(maps[-1], tokens.transpose(1, 2).reshape(4, 16, 4, 4), atol=1e-6)
    assert not torch.allclose(maps[1], maps[2], atol=1e-3)  # the blocks before the norm: their own
    # a token's grid cell is its patch: the top-left 2 x 2 pooled cell is the mean of the top-left
    # 2 x 2 patches' tokens
    quad = FeatureEncoder(model, FeatureConfig(source="stages", stages=[-1], pool=2))
    assert quad.dim == 4 * 16
    got = quad(x).reshape(4, 16, 2, 2)
    assert torch.allclose(got[..., 0, 0], maps[-1][..., :2, :2].mean((2, 3)), atol=1e-6)
    if pool == "mean":  # the last block pooled to one cell is the mean-pooled code
        whole = FeatureEncoder(model, FeatureConfig(source="stages", stages=[-1], pool=1))
        assert torch.allclose(whole(x), model.encode(x), atol=1e-5)
    every = FeatureEncoder(model, FeatureConfig(source="stages", pool=1, pool_op="max"))
    assert every.dim == 3 * 16
    with pytest.raises(ConfigError, match=r"features\.stages\[0\]"):
        FeatureEncoder(model, FeatureConfig(source="stages", stages=[3]))
    # block maps are all at one scale: not the multi-scale stages a U-Net segmenter skips from
    with pytest.raises(ConfigError, match="encoder"):
        strip_head(model.encoder, "mae")


def test_block_features_fine_tune_with_layer_decay():
    model = build_model("mae", (1, 8, 8), {**SMALL, "depth": 2})
    feats = FeatureEncoder(model, FeatureConfig(source="stages", stages=[-1], pool=2))
    clf = Classifier(feats, 3, layer_decay=0.5)
    x, y = torch.rand(6, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    clf(x, y)["loss"].backward()
    assert model.encoder.blocks[0].attn.qkv.weight.grad.abs().sum() > 0  # the blocks train
    assert sum(len(g["params"]) for g in clf.param_groups(1.0)) == len(list(clf.parameters()))


def test_options_are_validated_and_named():
    for options, field in [({"patch_size": 3}, "model.patch_size"), ({"mask_ratio": 1.0}, "model.mask_ratio"),
                           ({"mask_ratio": 0.99}, "model.mask_ratio"), ({"heads": 3}, "model.heads"),
                           ({"pool": "max"}, "model.pool"), ({"width": 18, "heads": 2}, "model.width")]:
        with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
            small(**options)
    with pytest.raises(ConfigError, match=r"model\.reconstruction"):
        build_model("mae", (1, 8, 8), SMALL, reconstruction="bce")


@pytest.mark.parametrize("pool", ["mean", "cls"])
def test_save_load_round_trip(tmp_path, pool):
    model = small(pool, [{"name": "l1", "weight": 1e-3}]).eval()
    save_model(model, tmp_path)
    loaded = load_model(tmp_path)
    assert isinstance(loaded, MaskedAutoencoder)
    x = torch.rand(4, 1, 8, 8)
    assert torch.equal(loaded.encode(x), model.encode(x))
    torch.manual_seed(1)
    a = model(x)
    torch.manual_seed(1)
    assert torch.equal(loaded(x)["loss"], a["loss"])


@pytest.mark.parametrize("regs", [
    [{"name": "l1"}], [{"name": "topk", "k": 4}], [{"name": "denoising", "noise": "gaussian"}],
    [{"name": "contractive"}], [{"name": "contractive", "method": "vjp", "samples": 1.0}],
    [{"name": "denoising", "noise": "masking"}, {"name": "l1"}, {"name": "contractive", "method": "exact"}],
], ids=lambda r: "+".join(x["name"] for x in r))
def test_regularizers_act_on_the_pooled_code(regs):
    model = small(regs=regs)
    terms = model(torch.rand(4, 1, 8, 8))
    assert torch.allclose(terms["loss"], terms["recon"] + sum(
        r.weight * terms[r.term] for r in model.regularizers if r.term))
    terms["loss"].backward()
    assert model.encoder.patch_embed.proj.weight.grad.abs().sum() > 0
    if regs[0]["name"] == "topk":
        assert ((model.encode(torch.rand(3, 1, 8, 8)) != 0).sum(1) == 4).all()


def test_contractive_estimates_by_double_backward_and_refuses_forward_mode():
    assert small(regs=[{"name": "contractive"}]).regularizers[0].method == "vjp"
    with pytest.raises(ConfigError, match=r"regularizers\[0\]\.method"):
        small(regs=[{"name": "contractive", "method": "jvp"}])
    with pytest.raises(ConfigError, match=r"regularizers\[0\]"):
        small(regs=[{"name": "kl"}])  # needs a (0, 1) code


def test_clips_and_a_bf16_step():
    model = small()
    assert torch.isfinite(model(torch.rand(2, 3, 1, 8, 8))["loss"])  # (B, T, C, H, W)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms = model(torch.rand(4, 1, 8, 8))
    assert terms["recon"].dtype == torch.float32 and torch.isfinite(terms["loss"])
    terms["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_layer_decay_gives_each_block_its_learning_rate():
    model = build_model("mae", (1, 8, 8), {**SMALL, "depth": 3, "pool": "cls"})
    clf = Classifier(FeatureEncoder(model), 10, encoder_lr_scale=0.5, layer_decay=0.5)
    groups = clf.param_groups(1.0)
    assert groups[0]["lr"] == 1.0 and groups[0]["params"] == list(clf.head.parameters())
    assert [g["lr"] for g in groups[1:]] == pytest.approx([0.5 * 0.5 ** (4 - i) for i in range(5)])
    enc = model.encoder
    assert groups[1]["params"] == [enc.cls_token, *enc.patch_embed.parameters()]  # layer 0
    assert groups[2]["params"] == list(enc.blocks[0].parameters())
    assert groups[4]["params"] == list(enc.blocks[2].parameters())
    assert groups[5]["params"] == list(enc.norm.parameters())  # top: decay^0
    assert sum(len(g["params"]) for g in groups) == len(list(clf.parameters()))
    conv = build_model("conv", (1, 8, 8), {"channels": [4], "code_dim": 8})
    with pytest.raises(ConfigError, match=r"finetune\.layer_decay"):
        Classifier(FeatureEncoder(conv), 10, layer_decay=0.75)


def test_tiny_pretrain_in_bf16_then_probe_beats_chance(tmp_path):
    from aevision.tasks.pretrain import pretrain
    from aevision.tasks.probe import LinearProbe

    cfg = tiny_config(tmp_path, model={"name": "mae", **SMALL},
                      regularizers=[{"name": "l1", "weight": 1e-4}],
                      train={"epochs": 2, "batch_size": 32, "progress": False, "precision": "bf16-mixed"})
    result = pretrain(cfg)
    assert isinstance(result.model, MaskedAutoencoder)
    losses = [row["train_loss"] for row in result.history]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
    loaded = load_model(result.out_dir)
    train, test = result.data.train, result.data.test
    feats = FeatureEncoder(loaded)
    probe = LinearProbe().fit(extract(feats, train), train.labels)
    accuracy = float((probe.predict(extract(feats, test)) == test.labels).float().mean())
    assert accuracy > 0.3  # chance: 0.1


def test_benchmark_fine_tunes_mae_with_layer_decay_against_its_untrained_twin(tmp_path):
    import json

    from aevision.benchmark import load_benchmark, run_benchmark

    models = {"mae": {"model": {"name": "mae", **SMALL}, "train": {"epochs": 1, "batch_size": 64}}}
    cfg = load_benchmark("quick", [
        f"output_dir={tmp_path}", f"models={json.dumps(models)}", "baselines=[scratch]",
        "labels=[all]", "seeds=1", "protocols.linear.enabled=false", "protocols.knn.enabled=false",
        "protocols.finetune.models=null", "protocols.finetune.labels=[all]",
        "protocols.finetune.layer_decay=0.75", "protocols.finetune.train.epochs=1",
        "imbalance.ratio=null", "confusion_png=false"])
    board = run_benchmark(cfg, verbose=False).board
    assert board["datasets"]["digits"]["methods"]["mae"]["scratch_baseline"] == "scratch:mae"
    rows = {r["method"]: r for r in board["rows"] if r["protocol"] == "finetune"}
    assert set(rows) == {"mae", "scratch:mae"}
    assert all(0 < r["accuracy_mean"] <= 1 for r in rows.values())


def test_resume_matches_an_uninterrupted_run(tmp_path):
    from safetensors.torch import load_file

    from aevision.tasks.pretrain import pretrain

    def config(name, epochs):
        return tiny_config(tmp_path / name, model={"name": "mae", **SMALL},
                           regularizers=[{"name": "denoising", "sigma": 0.2}, {"name": "contractive"}],
                           train={"epochs": epochs, "batch_size": 64, "progress": False,
                                  "deterministic": True})

    pretrain(config("full", 2))
    pretrain(config("part", 1))
    second = pretrain(config("part", 2), resume=True)
    assert second.fit.resumed_from.endswith("last.ckpt")
    assert [h["epoch"] for h in second.history] == [1, 2]
    a, b = (load_file(tmp_path / name / "model.safetensors") for name in ("full", "part"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # the masks were drawn again exactly


def _fused_flags(model):
    return {b.attn.fused_attn for b in [*model.encoder.blocks, *model.decoder.blocks]}


def test_attention_runs_by_formula_under_cpu_bf16_and_by_kernel_in_fp32():
    """``auto``: the formula where it is faster (bf16 on the CPU, bench/attention.py), the fused
    kernel elsewhere; a contractive model keeps the formula (forward-mode AD and double backward
    go through it); the two give the same loss."""
    model = small()
    x = torch.rand(4, 1, 8, 8)
    torch.manual_seed(0)
    fp32 = model(x)["loss"]
    assert _fused_flags(model) == {True}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(x)
    assert _fused_flags(model) == {False}
    model.encoder.attention = model.decoder.attention = "formula"
    torch.manual_seed(0)
    assert torch.allclose(model(x)["loss"], fp32, atol=1e-6)
    assert _fused_flags(model) == {False}
    contractive = small(regs=[{"name": "contractive"}])
    contractive(x)
    assert {b.attn.fused_attn for b in contractive.encoder.blocks} == {False}
