"""The variational autoencoder: KL term, reparameterisation, features, saving, sampling."""

from __future__ import annotations

import math

import pytest
import torch

from aevision.errors import AevisionError, ConfigError
from aevision.models import build_model, load_model, save_model
from aevision.regularizers.gaussian import GaussianLatent, gaussian_kl
from aevision.tasks.generate import interpolate, lerp_codes, sample


def kl_by_hand(mu: list[float], logvar: list[float]) -> float:
    """KL(N(mu, sigma^2) || N(0, 1)) summed over units, from the textbook formula
    log(1 / sigma) + (sigma^2 + mu^2) / 2 - 1/2 per unit."""
    total = 0.0
    for m, lv in zip(mu, logvar, strict=True):
        sigma = math.exp(0.5 * lv)
        total += math.log(1.0 / sigma) + (sigma**2 + m**2) / 2 - 0.5
    return total


def test_gaussian_kl_matches_hand_computation_and_torch_distributions():
    mu = torch.tensor([[0.5, -1.0, 2.0], [0.0, 0.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(4.0), -1.0], [0.0, 0.0, 0.0]])
    kl = gaussian_kl(mu, logvar)
    assert kl[0].item() == pytest.approx(kl_by_hand([0.5, -1.0, 2.0], [0.0, math.log(4.0), -1.0]), rel=1e-6)
    assert kl[1].item() == pytest.approx(0.0, abs=1e-7)  # the prior itself
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    torch.testing.assert_close(kl, torch.distributions.kl_divergence(q, p).sum(1))


@pytest.mark.parametrize("name, options", [
    ("vae", {"hidden": [32], "code_dim": 3, "beta": 4.0}),
    ("conv-vae", {"channels": [4, 8], "code_dim": 3, "beta": 4.0}),
])
def test_vae_loss_terms(name, options):
    model = build_model(name, (1, 12, 10), options, reconstruction="bce")
    x = torch.rand(6, 1, 12, 10)
    model.eval()
    terms = model(x)
    h = model.encoder(x)  # (N, 2D): mean, log-variance
    assert h.shape == (6, 6)
    mu, logvar = h[:, :3], h[:, 3:]
    torch.testing.assert_close(model.encode(x), mu)  # features are the posterior mean
    torch.testing.assert_close(terms["kld"], gaussian_kl(mu, logvar).mean())
    # beta-VAE objective per pixel: mean BCE + beta * KL / pixels
    assert model.regularizers[0].weight == pytest.approx(4.0 / 120)
    expected = terms["recon"] + 4.0 / 120 * terms["kld"]
    torch.testing.assert_close(terms["loss"], expected)
    # summed-over-pixels BCE of the mean reconstruction, by hand
    x_hat = model.decode(mu)
    bce = -(x * x_hat.log() + (1 - x) * (1 - x_hat).log()).mean()
    torch.testing.assert_close(terms["recon"], bce, rtol=1e-4, atol=1e-5)


def test_reparameterisation_samples_in_training_and_is_differentiable():
    model = build_model("vae", (1, 8, 8), {"hidden": [16], "code_dim": 4})
    x = torch.rand(64, 1, 8, 8)
    model.train()
    z1, z2 = model.encode(x), model.encode(x)
    assert not torch.equal(z1, z2)  # a fresh eps each time
    model.eval()
    torch.testing.assert_close(model.encode(x), model.encode(x))
    model.train()
    model(x)["loss"].backward()
    head = [m for m in model.encoder.modules() if isinstance(m, torch.nn.Linear)][-1]
    assert head.weight.grad is not None and head.weight.grad[4:].abs().sum() > 0  # log-variance rows


def test_sample_std_matches_the_posterior():
    reg = GaussianLatent(beta=1.0, pixels=1)
    reg.train()
    h = torch.cat([torch.full((20000, 1), 1.5), torch.full((20000, 1), math.log(0.25))], dim=1)
    z = reg.transform_code(h)
    assert z.mean().item() == pytest.approx(1.5, abs=0.02)
    assert z.std().item() == pytest.approx(0.5, abs=0.02)


def test_vae_saves_and_loads(tmp_path):
    model = build_model("conv-vae", (1, 9, 9), {"channels": [4], "code_dim": 2, "beta": 0.5},
                        [{"name": "l1", "weight": 1e-3}], "bce")
    save_model(model, tmp_path)
    loaded = load_model(tmp_path)
    x = torch.rand(3, 1, 9, 9)
    torch.testing.assert_close(loaded.encode(x), model.eval().encode(x))
    assert [type(r).__name__ for r in loaded.regularizers] == ["GaussianLatent", "L1Sparsity"]
    assert loaded.regularizers[0].beta == 0.5


def test_vae_options_are_validated():
    with pytest.raises(ConfigError, match=r"model\.beta"):
        build_model("vae", (1, 8, 8), {"beta": -1.0})
    with pytest.raises(ConfigError, match=r"model\.code_activation"):
        build_model("vae", (1, 8, 8), {"code_activation": "relu"})
    with pytest.raises(ConfigError, match=r"regularizers\[0\]"):  # configured indices, not shifted
        build_model("vae", (1, 8, 8), {"code_dim": 4}, [{"name": "topk", "k": 5}])


def test_sample_and_interpolate_shapes():
    model = build_model("conv-vae", (3, 11, 13), {"channels": [4, 8], "code_dim": 5}).eval()
    images = sample(model, 7, seed=3)
    assert images.shape == (7, 3, 11, 13)
    assert images.min() >= 0 and images.max() <= 1
    torch.testing.assert_close(images, sample(model, 7, seed=3))  # seeded
    assert not torch.equal(images, sample(model, 7, seed=4))
    a = torch.randint(0, 256, (3, 11, 13), dtype=torch.uint8)
    b = torch.randint(0, 256, (3, 11, 13), dtype=torch.uint8)
    for path in ("linear", "slerp"):
        row = interpolate(model, a, b, steps=6, path=path)
        assert row.shape == (6, 3, 11, 13)
        ends = model.reconstruct(torch.stack([a, b]).float() / 255)
        torch.testing.assert_close(row[0], ends[0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(row[-1], ends[1], rtol=1e-4, atol=1e-5)


def test_interpolation_paths():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    t = torch.tensor([0.0, 0.5, 1.0])
    torch.testing.assert_close(lerp_codes(a, b, t)[1], torch.tensor([0.5, 0.5]))
    s = lerp_codes(a, b, t, "slerp")
    torch.testing.assert_close(s[0], a)
    torch.testing.assert_close(s[2], b)
    # halfway along the quarter circle: 45 degrees, still on the unit circle
    assert torch.atan2(s[1][1], s[1][0]).item() == pytest.approx(math.pi / 4, abs=1e-6)
    assert s[1].norm().item() == pytest.approx(1.0, abs=1e-6)


def test_sample_refuses_a_model_without_prior():
    model = build_model("dense", (1, 8, 8), {"code_dim": 4})
    with pytest.raises(AevisionError, match="no prior"):
        sample(model, 4)
    with pytest.raises(AevisionError, match="steps"):
        interpolate(model, torch.rand(1, 8, 8), torch.rand(1, 8, 8), steps=1)


def test_sample_and_interpolate_cli(tmp_path, capsys):
    from PIL import Image

    from aevision.cli import main

    run = tmp_path / "vae"
    assert main(["pretrain", "--dataset", "digits", "--limit", "100", "--epochs", "1", "--no-progress",
                 "--model", "vae", "model.code_dim=4", "model.hidden=[16]", "model.reconstruction=bce",
                 "-o", str(run)]) == 0
    grid = tmp_path / "samples.png"
    assert main(["sample", str(run), "-n", "10", "--nrow", "5", "-o", str(grid)]) == 0
    assert Image.open(grid).size == ((5 * 9 + 1) * 8, (2 * 9 + 1) * 8)  # 8x8 digits, pad 1, x8
    path = tmp_path / "path.png"
    assert main(["interpolate", str(run), "--dataset", "digits", "--pairs", "3", "--steps", "6",
                 "--path", "slerp", "-o", str(path)]) == 0
    assert Image.open(path).size == ((6 * 9 + 1) * 8, (3 * 9 + 1) * 8)
    capsys.readouterr()
    save_model(build_model("dense", (1, 8, 8), {"code_dim": 4}), tmp_path / "ae")
    assert main(["sample", str(tmp_path / "ae"), "-o", str(grid)]) == 2
    assert "no prior" in capsys.readouterr().err
    assert main(["interpolate", str(run), "--dataset", "digits", "--limit", "3", "-o", str(path)]) == 2
    assert "pairs" in capsys.readouterr().err
    for bad in ("inf", "nan", "0", "-1"):  # an infinite one drew NaN codes and wrote a garbage image
        assert main(["sample", str(run), "--temperature", bad, "-o", str(tmp_path / "t.png")]) == 2
        assert f"--temperature: got {float(bad)}, expected a finite number > 0" in capsys.readouterr().err
    assert not (tmp_path / "t.png").exists()
