"""Regularizers against their definitions: the contractive estimators against the exact Jacobian."""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import jacrev, vmap

from aevision.errors import ConfigError
from aevision.models import LossContext, build_model
from aevision.regularizers import build_regularizer
from aevision.regularizers.contractive import frobenius_closed_form, frobenius_exact
from aevision.regularizers.denoising import corrupt


def exact_frobenius(model, x):
    """Reference: per-sample ||dz/dx||_F^2 from torch.func.jacrev."""
    def f(xi):
        return model.encode(xi.unsqueeze(0)).squeeze(0)

    jac = vmap(jacrev(f))(x)  # (N, D, C, H, W)
    return jac.pow(2).flatten(1).sum(1)


def context(model, x):
    z = model.encode(x)
    return LossContext(model, x, x, z, model.decode(z), x)


def test_closed_form_matches_exact_jacobian_for_one_layer_sigmoid():
    model = build_model("dense", (1, 6, 5), {"code_dim": 7, "code_activation": "sigmoid"},
                        [{"name": "contractive"}])
    reg = model.regularizers[0]
    assert reg.method == "closed_form"  # auto picks it for this encoder
    x = torch.rand(4, 1, 6, 5)
    ref = exact_frobenius(model, x)
    got = reg.per_sample(context(model, x))
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    linear = model.encoder[1]
    torch.testing.assert_close(frobenius_closed_form(model.encode(x), linear.weight), ref,
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("arch,options", [
    ("dense", {"hidden": [12], "code_dim": 5}),
    ("conv", {"channels": [3, 4], "code_dim": 5, "batch_norm": False}),
])
def test_exact_method_matches_jacrev(arch, options):
    model = build_model(arch, (1, 7, 6), options, [{"name": "contractive", "method": "exact"}]).eval()
    x = torch.rand(3, 1, 7, 6)
    torch.testing.assert_close(frobenius_exact(model, x, create_graph=False), exact_frobenius(model, x),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", ["jvp", "vjp"])
@pytest.mark.parametrize("distribution", ["rademacher", "gaussian"])
def test_stochastic_estimators_are_unbiased(method, distribution):
    torch.manual_seed(1)
    model = build_model("conv", (1, 7, 6), {"channels": [3, 4], "code_dim": 5},
                        [{"name": "contractive", "method": method, "projections": 4000,
                          "distribution": distribution, "samples": 1.0}]).eval()
    x = torch.rand(2, 1, 7, 6)
    ref = exact_frobenius(model, x)
    reg = model.regularizers[0]
    if method == "jvp":
        est = reg.per_sample(_jvp_context(model, x, reg))
    else:
        est = reg.per_sample(context(model, x))
    # 4000 projections: the standard error is a few percent of the value
    torch.testing.assert_close(est, ref, rtol=0.08, atol=1e-4)


@pytest.mark.parametrize("method", ["exact", "jvp"])
def test_the_estimate_on_a_fraction_of_the_batch_is_the_first_samples_estimate(method):
    torch.manual_seed(0)
    model = build_model("conv", (1, 7, 6), {"channels": [3, 4], "code_dim": 5},
                        [{"name": "contractive", "method": method, "samples": 0.25,
                          "projections": 3000}]).eval()
    reg = model.regularizers[0]
    assert reg.input_tangent(torch.rand(2, 1, 7, 6)) is None  # its own pass, on the subset only
    x = torch.rand(7, 1, 7, 6)
    est = reg.per_sample(context(model, x))
    assert est.shape == (2,)  # ceil(0.25 * 7) samples
    torch.testing.assert_close(est, exact_frobenius(model, x[:2]), rtol=0.1 if method == "jvp" else 1e-4,
                               atol=1e-4)
    if method == "exact":  # the penalty is their mean: unbiased for the batch mean (batches are shuffled)
        torch.testing.assert_close(reg.penalty(context(model, x)), exact_frobenius(model, x[:2]).mean())


def _jvp_context(model, x, reg):
    import torch.autograd.forward_ad as fwAD

    u = reg.input_tangent(x)
    with fwAD.dual_level():
        z, jvp = fwAD.unpack_dual(model.encode(fwAD.make_dual(x, u)))
    return LossContext(model, x, x, z, model.decode(z), x, None, u, jvp)


def test_jvp_penalty_rides_along_the_training_forward_pass():
    model = build_model("conv", (1, 8, 8), {"channels": [4], "code_dim": 3},
                        [{"name": "contractive", "method": "jvp", "weight": 0.5}])
    terms = model(torch.rand(6, 1, 8, 8))
    assert terms["contractive"] > 0
    torch.testing.assert_close(terms["loss"], terms["recon"] + 0.5 * terms["contractive"])
    terms["loss"].backward()  # reverse-over-forward works through the conv stack


def test_closed_form_refused_for_deep_encoders():
    with pytest.raises(ConfigError, match="closed form needs a dense model"):
        build_model("dense", (1, 4, 4), {"hidden": [8], "code_activation": "sigmoid"},
                    [{"name": "contractive", "method": "closed_form"}])


def test_topk_keeps_exactly_k_units():
    model = build_model("dense", (1, 6, 6), {"code_dim": 20, "code_activation": "linear"},
                        [{"name": "topk", "k": 5, "eval_k": 8}])
    x = torch.rand(10, 1, 6, 6)
    z = model.encode(x)
    assert ((z != 0).sum(1) == 5).all()
    raw = model.encoder(x)
    kept = raw.topk(5, dim=1).values
    torch.testing.assert_close(z.topk(5, dim=1).values, kept)
    model.eval()
    assert ((model.encode(x) != 0).sum(1) == 8).all()


def test_topk_larger_than_code_is_refused():
    with pytest.raises(ConfigError, match=r"regularizers\[0\]\.k"):
        build_model("dense", (1, 4, 4), {"code_dim": 3}, [{"name": "topk", "k": 4}])


def test_l1_is_mean_of_code_l1_norms():
    model = build_model("dense", (1, 4, 4), {"code_dim": 3}, [{"name": "l1", "weight": 0.1}])
    x = torch.rand(5, 1, 4, 4)
    ctx = context(model, x)
    torch.testing.assert_close(model.regularizers[0].penalty(ctx), ctx.z.abs().sum(1).mean())


def test_kl_sparsity_matches_hand_computation():
    model = build_model("dense", (1, 2, 2), {"code_dim": 2, "code_activation": "sigmoid"},
                        [{"name": "kl", "rho": 0.1}])
    z = torch.tensor([[0.2, 0.5], [0.4, 0.5]])
    ctx = LossContext(model, torch.zeros(2, 1, 2, 2), torch.zeros(2, 1, 2, 2), z, z, z)
    rho = 0.1
    expected = sum(rho * math.log(rho / r) + (1 - rho) * math.log((1 - rho) / (1 - r)) for r in (0.3, 0.5))
    assert model.regularizers[0].penalty(ctx).item() == pytest.approx(expected, rel=1e-5)


def test_kl_needs_a_sigmoid_code():
    with pytest.raises(ConfigError, match="code_activation=sigmoid"):
        build_model("dense", (1, 4, 4), {}, [{"name": "kl"}])


def test_denoising_corrupts_only_in_training():
    model = build_model("dense", (1, 4, 4), {"code_dim": 3}, [{"name": "denoising", "sigma": 0.5}])
    x = torch.rand(64, 1, 4, 4)
    assert not torch.equal(model.regularizers[0].corrupt(x), x)
    model.eval()
    torch.manual_seed(0)
    a = model(x)["loss"]
    b = model(x)["loss"]
    assert torch.equal(a, b)  # no noise at evaluation


def test_corruptions_have_the_requested_strength():
    x = torch.full((200, 3, 16, 16), 0.5)
    g = torch.Generator().manual_seed(0)
    noisy = corrupt(x, "gaussian", sigma=0.1, generator=g)
    assert (noisy - x).std().item() == pytest.approx(0.1, rel=0.05)
    masked = corrupt(x, "masking", p=0.3, generator=g)
    assert (masked == 0).float().mean().item() == pytest.approx(0.3, abs=0.01)
    sp = corrupt(x, "salt_pepper", p=0.2, generator=g)
    assert ((sp == 0) | (sp == 1)).float().mean().item() == pytest.approx(0.2, abs=0.01)
    assert (masked[:, 0] == masked[:, 1]).all()  # whole pixels, all channels


def test_unknown_regularizer_options_are_rejected():
    with pytest.raises(ConfigError, match=r"regularizers\[0\]\.sigmaa"):
        build_model("dense", (1, 4, 4), {}, [{"name": "denoising", "sigmaa": 0.3}])
    with pytest.raises(ConfigError, match=r"regularizers\[0\]\.weight"):
        build_model("dense", (1, 4, 4), {}, [{"name": "l1", "weight": -1}])


def test_weight_is_a_constructor_option_of_the_regularizers_with_a_penalty():
    model = build_model("dense", (1, 4, 4), {"code_dim": 3}, [{"name": "l1", "weight": 2},
                                                              {"name": "contractive", "weight": None}])
    assert [r.weight for r in model.regularizers] == [2.0, 1e-3]  # null: the default weight
    for bad in (True, "heavy", float("nan")):
        with pytest.raises(ConfigError, match=r"regularizers\[0\]\.weight"):
            build_model("dense", (1, 4, 4), {}, [{"name": "l1", "weight": bad}])
    with pytest.raises(ConfigError, match=r"regularizers\[0\]\.weight.*a known option: eval_k, k"):
        build_model("dense", (1, 4, 4), {}, [{"name": "topk", "weight": 0.5}])  # it has no penalty


def test_entropy_models_are_built_for_the_declared_code_and_keep_nothing_between_hooks():
    options = {"channels": 8, "code_channels": 6, "stages": 2}
    with pytest.raises(ConfigError, match=r"regularizers\[0\]\.code_shape"):  # the model's, not the config's
        build_model("codec", (3, 16, 16), options, [{"name": "factorized", "code_shape": [6, 4, 4]}])
    model = build_model("codec", (3, 16, 16), options, [{"name": "hyperprior", "channels": 5, "means": True}])
    reg = model.regularizers[0]
    assert reg.code_shape == (6, 4, 4) and reg.h_a[0].in_channels == 6
    before = dict(vars(reg))
    model.train()(torch.rand(2, 3, 16, 16))["loss"].backward()
    assert {k: v for k, v in vars(reg).items() if k != "_cache"} == \
        {k: v for k, v in before.items() if k != "_cache"}
    # a config's options are checked before there is a model (a benchmark's, ahead of its runs)
    assert build_regularizer({"name": "factorized", "filters": [2]}, "f").code_shape == (1, 1, 1)


@pytest.mark.parametrize("method,samples", [("jvp", 0.5), ("vjp", 1.0), ("exact", 0.5)])
def test_extra_encoder_passes_leave_batch_norm_statistics_alone(method, samples):
    torch.manual_seed(0)
    options = {"channels": [3, 4], "code_dim": 5, "batch_norm": True}
    reg = [{"name": "contractive", "method": method, "samples": samples}]
    with_penalty = build_model("conv", (1, 7, 6), options, reg).train()
    plain = build_model("conv", (1, 7, 6), options).train()
    plain.load_state_dict(with_penalty.state_dict())
    x = torch.rand(8, 1, 7, 6)
    with_penalty(x)
    plain(x)
    for (name, a), b in zip(with_penalty.state_dict().items(), plain.state_dict().values(), strict=True):
        assert torch.equal(a, b), name  # running mean / var / batch count: one update, as without it


@pytest.mark.parametrize("regularizer", [
    {"name": "contractive", "method": "jvp"},  # a quarter of the batch: a second, dual pass
    {"name": "contractive", "method": "jvp", "samples": 1.0},  # the tangent rides the model's pass
    {"name": "contractive", "method": "vjp"},
])
def test_contractive_penalty_stays_eager_under_torch_compile(regularizer):
    """Inductor drops forward-mode tangents (pytorch#187284; a crash on torch 2.11 + CUDA + bf16):
    no compiled graph may hold the penalty's autograd, and the compiled model's terms and gradients
    must be the eager model's."""
    graphs = []

    def recording_backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch.manual_seed(0)
    model = build_model("conv", (3, 16, 16), {"channels": [8, 16], "code_dim": 12}, [regularizer])
    x = torch.rand(8, 3, 16, 16)
    compiled = torch.compile(model, backend=recording_backend)
    torch.manual_seed(1)
    eager = model(x)
    eager["loss"].backward()
    eager_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    torch.manual_seed(1)
    traced = compiled(x)
    traced["loss"].backward()
    assert graphs, "torch.compile traced nothing"
    traced_ops = {str(node.target) for gm in graphs for node in gm.graph.nodes}
    assert not [op for op in traced_ops if "dual" in op or "autograd.grad" in op], traced_ops
    assert set(traced) == set(eager)
    for k in eager:
        torch.testing.assert_close(traced[k], eager[k])
    for p, g in zip(model.parameters(), eager_grads, strict=True):
        torch.testing.assert_close(p.grad, g)


CONV = ("conv", (3, 16, 16), {"channels": [8, 16], "code_dim": 12})
CODEC = ("codec", (3, 16, 16), {"channels": 8, "code_channels": 6, "stages": 2})


@pytest.mark.parametrize("model, regularizer", [
    (CONV, {"name": "denoising"}),
    (CONV, {"name": "geometric"}),
    (CONV, {"name": "l1", "weight": 1e-3}),
    (CONV, {"name": "topk", "k": 4}),
    (("conv", (3, 16, 16), {"channels": [8, 16], "code_dim": None}), {"name": "wta"}),
    (("dense", (1, 4, 4), {"code_dim": 4, "code_activation": "sigmoid"}), {"name": "kl"}),
    (CODEC, {"name": "factorized", "weight": 0.01}),
    (CODEC, {"name": "hyperprior", "weight": 0.01, "channels": 5}),
    # clips of 4 frames: the term needs frame order
    (("dsae", (3, 32, 24), {"channels": [8], "keypoints": 5, "downsample": 4}, 4), {"name": "smoothness"}),
    # the VAE brings its Gaussian latent (reparameterisation noise + KL) itself
    (("vae", (1, 8, 8), {"hidden": [16], "code_dim": 4}), None),
], ids=lambda v: (v or {"name": "gaussian"})["name"] if not isinstance(v, tuple) else v[0])
def test_train_compile_gives_the_eager_terms_and_gradients(model, regularizer):
    """``train.compile=true`` with each regularizer (AOTAutograd tracing, without Inductor's code
    generation, to stay fast): same loss terms and gradients as the eager model."""
    arch, shape, options, *clip = model
    torch.manual_seed(0)
    m = build_model(arch, shape, options, [regularizer] if regularizer else []).train()
    x = torch.rand(2 if clip else 8, *clip, *shape)
    torch.manual_seed(1)
    eager = m(x)
    eager["loss"].backward()
    eager_grads = [None if p.grad is None else p.grad.clone() for p in m.parameters()]
    m.zero_grad(set_to_none=True)
    torch.manual_seed(1)
    traced = torch.compile(m, backend="aot_eager")(x)
    traced["loss"].backward()
    assert set(traced) == set(eager)
    for k in eager:
        torch.testing.assert_close(traced[k], eager[k])
    for p, g in zip(m.parameters(), eager_grads, strict=True):
        assert (p.grad is None) == (g is None)
        if g is not None:
            torch.testing.assert_close(p.grad, g)
