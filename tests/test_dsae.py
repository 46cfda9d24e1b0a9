"""The deep spatial autoencoder: spatial softmax, the smoothness term, pruning, and training on clips."""

from __future__ import annotations

import pytest
import torch

import aevision
from aevision.errors import AevisionError, ConfigError
from aevision.models import LossContext, build_model
from aevision.models.dsae import prune_keypoints
from aevision.models.spatial_softmax import SpatialSoftmax
from aevision.regularizers.smoothness import TemporalSmoothness


@pytest.mark.parametrize("h,w", [(5, 7), (1, 4), (9, 9)])
def test_spatial_softmax_returns_the_exact_coordinate_of_a_one_hot_activation(h, w):
    soft = SpatialSoftmax(temperature=1.0)
    xs = torch.linspace(-1, 1, w) if w > 1 else torch.zeros(1)
    ys = torch.linspace(-1, 1, h) if h > 1 else torch.zeros(1)
    cells = [(i, j) for i in range(h) for j in range(w)]
    a = torch.zeros(len(cells), 1, h, w)
    for n, (i, j) in enumerate(cells):
        a[n, 0, i, j] = 1e4  # exp(-1e4) underflows to exactly 0: a one-hot distribution
    points, presence = soft(a)
    expected = torch.tensor([[xs[j], ys[i]] for i, j in cells]).unsqueeze(1)
    assert torch.equal(points, expected)
    assert torch.equal(presence, torch.ones(len(cells), 1))
    if h > 1 and w > 1:  # the corners are exactly the ends of [-1, 1]
        assert points[0, 0].tolist() == [-1.0, -1.0] and points[-1, 0].tolist() == [1.0, 1.0]


def test_spatial_softmax_uniform_map_and_learned_temperature():
    soft = SpatialSoftmax(temperature=2.0)
    points, presence = soft(torch.zeros(2, 3, 4, 6))
    torch.testing.assert_close(points, torch.zeros(2, 3, 2), atol=1e-6, rtol=0)
    torch.testing.assert_close(presence, torch.full((2, 3), 1 / 24))
    a = torch.randn(2, 3, 4, 6, requires_grad=True)
    soft(a)[0].sum().backward()
    assert soft.log_temperature.grad is not None and soft.log_temperature.grad.abs() > 0
    assert float(soft.temperature.detach()) == pytest.approx(2.0)
    # a colder softmax moves the keypoint towards the peak
    b = torch.zeros(1, 1, 1, 5)
    b[0, 0, 0, 4] = 1.0
    warm = SpatialSoftmax(temperature=10.0)(b)[0][0, 0, 0]
    cold = SpatialSoftmax(temperature=0.1)(b)[0][0, 0, 0]
    assert 0 < warm < cold < 1


def _ctx(z: torch.Tensor, frames: int | None) -> LossContext:
    model = build_model("dense", (1, 4, 4), {"code_dim": z.shape[1]})
    return LossContext(model, z, z, z, z, z, frames)


def test_temporal_smoothness_is_zero_for_constant_velocity_and_exact_for_acceleration():
    reg = TemporalSmoothness()
    t = torch.arange(7, dtype=torch.float64).view(1, 7, 1)
    start, velocity = torch.randn(3, 1, 10, dtype=torch.float64), torch.randn(3, 1, 10, dtype=torch.float64)
    linear = (start + velocity * t).reshape(21, 10)  # 3 clips of 7 frames, 10 code units
    assert float(reg.penalty(_ctx(linear, 7))) == pytest.approx(0.0, abs=1e-20)
    # z_t = t^2 in every unit: second difference 2, squared 4, summed over 10 units
    quadratic = (t ** 2).expand(3, 7, 10).reshape(21, 10)
    assert float(reg.penalty(_ctx(quadratic, 7))) == pytest.approx(40.0)
    # single images have no order: no term, rather than a meaningless one
    assert reg.penalty(_ctx(linear, None)) is None


def test_dsae_shapes_gradients_and_options():
    model = build_model("dsae", (3, 32, 24), {"channels": [8], "keypoints": 5, "downsample": 4},
                        [{"name": "smoothness", "weight": 0.5}])
    clips = torch.rand(2, 4, 3, 32, 24)  # 2 clips of 4 frames
    terms = model(clips)
    assert set(terms) == {"loss", "recon", "smoothness"}
    torch.testing.assert_close(terms["loss"], terms["recon"] + 0.5 * terms["smoothness"])
    terms["loss"].backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name  # every weight learns, the temperature included
    x = clips[0]
    z = model.encode(x)
    assert z.shape == (4, 10) and z.abs().max() <= 1
    assert model.reconstruct(x).shape == (4, 1, 8, 6) == model.target(x).shape
    # the grey target is the luminance, area-averaged
    torch.testing.assert_close(model.target(torch.ones(1, 3, 32, 24)), torch.ones(1, 1, 8, 6))
    assert build_model("dsae", (1, 16, 16), {"code_dim": 12}).code_dim == 12
    assert build_model("dsae", (3, 16, 16), {"grey": False, "downsample": 2}).target(
        torch.rand(1, 3, 16, 16)).shape == (1, 3, 8, 8)


@pytest.mark.parametrize("options,field", [
    ({"code_dim": 7}, "model.code_dim"),
    ({"code_dim": 8, "keypoints": 3}, "model.code_dim"),
    ({"kernel_sizes": [3]}, "model.kernel_sizes"),
    ({"downsample": 0}, "model.downsample"),
    ({"temperature": 0}, "model.temperature"),
])
def test_bad_dsae_options_name_the_field(options, field):
    with pytest.raises(ConfigError) as e:
        build_model("dsae", (3, 16, 16), options)
    assert e.value.field == field


def test_pruning_keeps_the_most_present_keypoints_and_absorbs_the_rest():
    torch.manual_seed(1)
    model = build_model("dsae", (3, 16, 16), {"channels": [6], "keypoints": 6, "downsample": 2}).eval()
    frames = torch.rand(20, 3, 16, 16)
    with torch.no_grad():
        points, presence = model.encoder.keypoints(frames)
    order = presence.mean(0).argsort(descending=True)
    small = prune_keypoints(model, frames, keep=4).eval()
    kept = sorted(order[:4].tolist())
    assert small.code_dim == 8 and small.spec["pruned"]["kept"] == kept
    with torch.no_grad():
        torch.testing.assert_close(small.encode(frames), points[:, kept].flatten(1))
        # the pruned model decodes as the full one would with the dropped keypoints at their mean
        filled = points.clone()
        dropped = [i for i in range(6) if i not in kept]
        filled[:, dropped] = points[:, dropped].mean(0)
        torch.testing.assert_close(small.reconstruct(frames), model.decode(filled.flatten(1)),
                                   atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigError, match="keep"):
        prune_keypoints(model, frames, keep=7)
    with pytest.raises(AevisionError, match="has no keypoints"):
        prune_keypoints(build_model("dense", (3, 16, 16), {"code_dim": 4}), frames, keep=1)


def _video_config(out_dir, **train):
    return {
        "seed": 0, "output_dir": str(out_dir),
        "data": {"name": "moving-shapes", "n_train": 8, "n_test": 2, "frames": 6, "size": 32,
                 "clip_length": 3, "val_fraction": 0.25},
        "model": {"name": "dsae", "channels": [8], "keypoints": 4},
        "regularizers": [{"name": "smoothness", "weight": 0.1}],
        "train": {"epochs": 2, "batch_size": 4, "progress": False, **train},
    }


def test_dsae_trains_on_clips_with_the_engine_and_reloads(tmp_path):
    result = aevision.pretrain(_video_config(tmp_path))
    row = result.history[-1]
    assert {"train_recon", "train_smoothness", "val_recon", "val_smoothness"} <= set(row)
    assert all(torch.isfinite(torch.tensor(h["train_loss"])) for h in result.history)
    # each training sequence gives 2 non-overlapping clips of 3 frames; 4 clips a batch
    assert result.history[0]["step"] == len(result.data.train) * 2 // 4
    loaded = aevision.load(tmp_path)
    frames = result.data.test.images[:5]
    torch.testing.assert_close(aevision.encode(loaded, frames), aevision.encode(result.model, frames))
    summary = (tmp_path / "summary.json").read_text()
    assert '"frames_per_sequence": 6' in summary and '"clip_length": 3' in summary
    from aevision.tasks.html_report import write_report  # its reconstructions: frames of the clips

    write_report(tmp_path, tmp_path / "report.html")
    assert "the first 12 held-out frames and their reconstructions" in (tmp_path / "report.html").read_text()


def test_smoothness_without_clips_or_on_images_is_a_config_error(tmp_path):
    cfg = _video_config(tmp_path)
    cfg["data"]["clip_length"] = None
    with pytest.raises(ConfigError, match=r"data\.clip_length: got None, expected an integer >= 3"):
        aevision.pretrain(cfg)
    cfg["data"] = {"name": "digits", "limit": 50, "clip_length": 3}
    cfg["model"] = {"name": "dsae", "channels": [4], "keypoints": 2}
    with pytest.raises(ConfigError, match=r"data\.clip_length.*no frame order"):
        aevision.pretrain(cfg)
    cfg = _video_config(tmp_path)
    cfg["data"]["clip_length"] = 7
    with pytest.raises(ConfigError, match=r"data\.clip_length: got 7, expected at most the sequence length"):
        aevision.pretrain(cfg)
