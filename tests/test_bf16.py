"""bf16-mixed on the CPU: every architecture x regularizer trains a step, every training task runs,
and the parts that must stay float32 (penalty sums, entropy models, Jacobian estimates) do."""

from __future__ import annotations

import pytest
import torch
from lightning.fabric import Fabric

from aevision.config import DataConfig, TrainConfig
from aevision.data import load_dataset
from aevision.errors import AevisionError
from aevision.models import MODELS, build_model
from aevision.regularizers import REGULARIZERS
from aevision.regularizers.contractive import Contractive

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE = (1, 16, 16)
# each architecture, small, with the options that let most regularizers apply (a sigmoid code
# for kl, a spatial code for the entropy models and wta)
ARCHS = {
    "dense": {"hidden": [16], "code_dim": 8, "code_activation": "sigmoid"},
    "conv": {"channels": [4, 8], "code_dim": 8, "batch_norm": True},
    "conv-spatial": {"channels": [4, 8], "code_dim": None},
    "codec": {"channels": 8, "code_channels": 8, "stages": 2},
    "conv-vae": {"channels": [4, 8], "code_dim": 4},
    "vae": {"hidden": [16], "code_dim": 4},
    "dsae": {"channels": [8, 8, 4], "downsample": 2},
    "unet": {"channels": [4, 8], "stem_channels": 4, "decoder_channels": [4, 4]},
    "mae": {"patch_size": 4, "width": 16, "depth": 1, "heads": 2, "decoder_width": 16, "decoder_depth": 1,
            "decoder_heads": 2},
    "patches": {"patch_size": 3, "features": 8},
}
REG_OPTIONS = {"hyperprior": {"channels": 8}, "topk": {"k": 4}, "contractive": {"samples": 1.0}}


def _arch(key: str) -> str:
    return "conv" if key == "conv-spatial" else key


def _combos() -> list[tuple[str, str | None]]:
    """Every (architecture, regularizer) pair the registry accepts, and each architecture alone."""
    out: list[tuple[str, str | None]] = []
    for key, options in ARCHS.items():
        for reg in [None, *REGULARIZERS.names()]:
            regs = [{"name": reg, **REG_OPTIONS.get(reg, {})}] if reg else []
            try:
                build_model(_arch(key), SHAPE, options, regs)
            except AevisionError:
                continue
            out.append((key, reg))
    return out


COMBOS = _combos()


def test_the_sweep_covers_every_registered_architecture_and_regularizer():
    assert {_arch(a) for a, _ in COMBOS} == set(MODELS.names())
    assert {r for _, r in COMBOS if r} == set(REGULARIZERS.names())


@pytest.fixture(scope="module")
def fabric() -> Fabric:
    return Fabric(accelerator="cpu", devices=1, precision="bf16-mixed")


def _batch(reg: str | None) -> torch.Tensor:
    if reg == "smoothness":  # clips of 3 frames: the penalty needs an order
        return torch.rand(2, 3, *SHAPE)
    return torch.rand(4, *SHAPE)


@pytest.mark.parametrize("arch,reg", COMBOS, ids=[f"{a}-{r}" for a, r in COMBOS])
def test_one_bf16_mixed_step_of_every_architecture_and_regularizer(fabric, arch, reg):
    """The Trainer's direct bf16-mixed path (inputs to bf16, the model under autocast, outputs
    back to float32): finite terms, every penalty among them, and a finite update."""
    from aevision.engine.loop import DirectForward, make_optimizer

    torch.manual_seed(0)
    regs = [{"name": reg, **REG_OPTIONS.get(reg, {})}] if reg else []
    model = build_model(_arch(arch), SHAPE, ARCHS[arch], regs)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    optimizer = make_optimizer(TrainConfig(), model.parameters())
    terms = DirectForward(model, fabric).train()(_batch(reg))
    assert all(torch.isfinite(v) for v in terms.values()), terms
    assert all(r.term in terms for r in model.regularizers if r.term)
    terms["loss"].backward()
    optimizer.step()
    moved = [k for k, v in model.named_parameters() if not torch.equal(v, before[k])]
    assert moved, "no weight was updated"
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_penalty_sums_stay_float32_under_autocast():
    """A bf16 sum of thousands of terms keeps 3 significant digits; the penalties widen first."""
    torch.manual_seed(0)
    model = build_model("dense", (1, 32, 32), {"code_dim": 4096}, [{"name": "l1"}])
    x = torch.rand(8, 1, 32, 32)
    ref = model(x)["l1"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = model(x)["l1"]
    assert got.dtype == torch.float32
    # the codes themselves are bf16 (0.4% each, independent): their sum is far closer than that
    assert abs(got.item() / ref.item() - 1) < 1e-3


def test_the_contractive_jvp_through_batch_norm_under_bf16_matches_float32():
    """Batch norm's forward-mode derivative returns a float32 tangent on a bf16 output under
    autocast; without recasting it the next conv fails. With it, the estimate is fp32's."""
    torch.manual_seed(0)
    model = build_model("conv", SHAPE, {"channels": [8, 16], "code_dim": 16, "batch_norm": True},
                        [{"name": "contractive", "method": "jvp", "samples": 1.0}])
    reg = model.regularizers[0]
    assert isinstance(reg, Contractive)
    x = torch.rand(32, *SHAPE)
    torch.manual_seed(1)
    ref = model(x)["contractive"]
    torch.manual_seed(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = model(x)["contractive"]
    assert got.dtype == torch.float32
    assert abs(got.item() / ref.item() - 1) < 0.05


def test_entropy_models_keep_float32_likelihoods_under_autocast():
    torch.manual_seed(0)
    model = build_model("codec", SHAPE, ARCHS["codec"], [{"name": "hyperprior", "channels": 8}])
    x = torch.rand(2, *SHAPE)
    terms32 = model(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms16 = model(x)
    name = model.regularizers[0].term
    assert terms16[name].dtype == torch.float32
    # the rate depends on the latents, which the bf16 analysis transform changes a little
    assert abs(terms16[name].item() / terms32[name].item() - 1) < 0.05


@pytest.fixture(scope="module")
def digits():
    return load_dataset(DataConfig(name="digits", limit=200), 0)


def _finite(history: list[dict]) -> bool:
    return bool(history) and all(torch.isfinite(torch.tensor(h["train_loss"])) for h in history)


def test_pretrain_finetune_and_segment_train_in_bf16_mixed(digits, tmp_path):
    from aevision.api import pretrain
    from aevision.models import save_model
    from aevision.tasks.features import FeatureConfig, FeatureEncoder
    from aevision.tasks.finetune import FinetuneConfig, finetune
    from aevision.tasks.segmentation import segment

    train = {"epochs": 1, "batch_size": 32, "progress": False, "precision": "bf16-mixed",
             "accelerator": "cpu"}
    result = pretrain({"seed": 0, "output_dir": str(tmp_path / "ae"),
                       "data": {"name": "digits", "limit": 200},
                       "model": {"name": "conv", "channels": [8, 16], "code_dim": 16}, "train": train})
    assert _finite(result.history) and torch.isfinite(torch.tensor(result.history[-1]["val_loss"]))

    cfg = FinetuneConfig(train=TrainConfig(**train), init="scratch")
    tuned = finetune(FeatureEncoder(result.model, FeatureConfig()), digits.train, digits.val, cfg,
                     tmp_path / "ft", n_classes=10, seed=0)
    assert _finite(tuned.history)

    save_model(build_model("conv", (3, 16, 16), {"channels": [8, 12], "code_dim": 10}), tmp_path / "rgb")
    seg = segment({"encoder": str(tmp_path / "rgb"), "examples": 0, "output_dir": str(tmp_path / "seg"),
                   "data": {"name": "shapes-seg", "val_fraction": 0.0,
                            "options": {"n_train": 16, "n_test": 8, "size": 16}},
                   "train": {**train, "batch_size": 8}})
    assert _finite(seg.fit.history)


# --- precision: auto ------------------------------------------------------------------------------


@pytest.mark.parametrize("features,expected", [(["avx512_bf16"], "bf16-mixed"), ([], "32-true")])
def test_auto_precision_on_the_cpu_follows_native_bf16(monkeypatch, features, expected):
    from aevision.engine import precision

    monkeypatch.setattr(precision, "cpu_bf16_features", lambda: features)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for accelerator in ("cpu", "auto"):
        chosen, why = precision.resolve_precision("auto", accelerator)
        assert chosen == expected
        assert ("natively (avx512_bf16)" in why) == bool(features)
        assert ("no native bfloat16" in why) == (not features)
    assert precision.resolve_precision("32-true", "cpu") == ("32-true", "as configured")
    assert precision.resolve_precision("bf16-mixed", "cpu")[0] == "bf16-mixed"


@pytest.mark.parametrize("supported,expected", [(True, "bf16-mixed"), (False, "32-true")])
def test_auto_precision_on_a_gpu_asks_cuda(monkeypatch, supported, expected):
    from aevision.engine import precision

    monkeypatch.setattr(precision, "cpu_bf16_features", lambda: ["avx512_bf16"])  # not asked
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: supported)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Test GPU")
    for accelerator in ("auto", "cuda", "gpu"):
        chosen, why = precision.resolve_precision("auto", accelerator)
        assert chosen == expected and "Test GPU" in why
    assert precision.resolve_precision("auto", "mps")[0] == "32-true"


def test_cpu_bf16_features_read_the_kernels_flags(monkeypatch, tmp_path):
    from aevision.engine import precision

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx512f amx_tile amx_bf16 avx512_vnni\n")
    monkeypatch.setattr(precision, "CPUINFO", info)
    assert precision.cpu_bf16_features() == ["amx_bf16"]
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f\n")
    assert precision.cpu_bf16_features() == []
    monkeypatch.setattr(precision, "CPUINFO", tmp_path / "absent")  # not Linux: no flags to read
    assert precision.cpu_bf16_features() == []


@pytest.mark.parametrize("features,expected", [(["avx512_bf16"], "bf16-mixed"), ([], "32-true")])
def test_the_trainer_resolves_auto_and_says_what_and_why(monkeypatch, caplog, tmp_path, features,
                                                         expected):
    import logging

    from aevision.api import as_config
    from aevision.data.batches import TensorBatches
    from aevision.engine import Trainer, precision

    monkeypatch.setattr(precision, "cpu_bf16_features", lambda: features)
    cfg = as_config({"train": {"precision": "auto", "accelerator": "cpu", "epochs": 1,
                               "batch_size": 4, "progress": False}}).train
    assert cfg.precision == "auto"
    with caplog.at_level(logging.INFO, logger="aevision"):
        trainer = Trainer(cfg, tmp_path)
    assert trainer.cfg.precision == expected
    assert f"train.precision=auto: {expected}" in caplog.text
    model = build_model("dense", SHAPE, {"code_dim": 4})
    x = torch.randint(0, 256, (8, *SHAPE), dtype=torch.uint8)
    result = trainer.fit(model, TensorBatches(x, 4, seed=0), None)
    assert _finite(result.history)
    # the run's config keeps "auto" (the same run on another machine is the same run)
    assert cfg.precision == "auto"


def test_pretrain_precision_auto_from_the_command_line(monkeypatch, tmp_path, caplog):
    import json

    from aevision.cli import main
    from aevision.engine import precision

    monkeypatch.setattr(precision, "cpu_bf16_features", lambda: ["amx_bf16"])
    assert main(["pretrain", "--dataset", "digits", "--limit", "100", "--epochs", "1",
                 "--batch-size", "32", "--model", "dense", "--accelerator", "cpu",
                 "--precision", "auto", "-o", str(tmp_path)]) == 0
    # the CLI shows aevision's INFO log on stderr
    assert "train.precision=auto: bf16-mixed (the CPU computes bfloat16 natively (amx_bf16))" \
        in caplog.text
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["config"]["train"]["precision"] == "auto"
