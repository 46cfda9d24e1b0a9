"""Image quality metrics: PSNR against a hand computation; SSIM / MS-SSIM (filtered in float32 for
speed) against torchmetrics in float64, and their fallback settings for small images."""

from __future__ import annotations

import math

import pytest
import torch
from torchmetrics.functional.image import (
    multiscale_structural_similarity_index_measure,
    structural_similarity_index_measure,
)

from aevision.tasks.quality import ms_ssim, ms_ssim_settings, psnr, ssim


def pair(shape: tuple[int, ...], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)
    noise = torch.randint(-20, 21, shape, generator=g)
    return a, (a.int() + noise).clamp(0, 255).to(torch.uint8)


def test_psnr_is_per_image_and_matches_a_hand_computation():
    a = torch.zeros(2, 1, 2, 2)
    b = a.clone()
    b[0, 0, 0, 0] = 0.5  # mse 0.0625 -> 12.04 dB
    out = psnr(b, a)
    assert out.shape == (2,)
    assert out[0].item() == pytest.approx(10 * math.log10(1 / 0.0625), abs=1e-5)
    assert math.isinf(out[1].item())


def test_ms_ssim_in_float32_agrees_with_torchmetrics_in_float64():
    a, b = pair((2, 3, 192, 200))
    s = ms_ssim_settings(192, 200)
    assert s["standard"] and s["scales"] == 5
    ref = multiscale_structural_similarity_index_measure(
        b.double() / 255, a.double() / 255, data_range=1.0, kernel_size=11, betas=s["betas"],
        reduction="none", normalize="relu")
    got = ms_ssim(b, a)
    assert got.dtype == torch.float32 and got.shape == (2,)
    assert torch.allclose(got.double(), ref, atol=1e-5)
    assert ms_ssim(a, a) == pytest.approx([1.0, 1.0], abs=1e-5)
    ref_ssim = structural_similarity_index_measure(b.double() / 255, a.double() / 255, data_range=1.0,
                                                   kernel_size=11, reduction="none")
    assert torch.allclose(ssim(b, a).double(), ref_ssim, atol=1e-5)


def test_ms_ssim_falls_back_to_fewer_scales_on_small_images():
    s = ms_ssim_settings(28, 28)
    assert not s["standard"] and (s["kernel_size"] - 1) * 2 ** (s["scales"] - 1) < 28
    assert sum(s["betas"]) == pytest.approx(1.0, abs=1e-5)
    a, b = pair((3, 1, 28, 28))
    assert ms_ssim(b, a).shape == (3,)
    with pytest.raises(ValueError, match="too small"):
        ms_ssim_settings(3, 3)
