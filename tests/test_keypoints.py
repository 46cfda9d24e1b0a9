"""Keypoint evaluation (ridge R^2, jitter, probe), drawings, and the ``aevision keypoints`` command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import r2_score as sk_r2

import aevision
from aevision.cli import main
from aevision.config import DataConfig
from aevision.data import load_dataset
from aevision.report.keypoints import draw_keypoints, palette, save_gif, save_strip
from aevision.tasks.keypoints import (
    frame_classification,
    jitter,
    normalised_centres,
    relative_jitter,
    tracking_r2,
    video_keypoints,
)
from aevision.tasks.regression import RidgeProbe, r2_score


def test_r2_matches_sklearn_and_ridge_recovers_a_linear_map():
    g = torch.Generator().manual_seed(0)
    y, y_hat = torch.randn(50, 2, generator=g).double(), torch.randn(50, 2, generator=g).double()
    assert r2_score(y, y_hat) == pytest.approx(sk_r2(y.numpy(), y_hat.numpy()), rel=1e-9)
    for n, d in ((300, 10), (60, 200)):  # primal (D < N) and dual (D > N) solvers
        x = torch.randn(n, d, generator=g)
        w = torch.randn(d, 2, generator=g)
        target = x @ w + 0.01 * torch.randn(n, 2, generator=g)
        a, b = n // 2, 3 * n // 4
        probe = RidgeProbe().fit(x[:a], target[:a], x[a:b], target[a:b])
        score = probe.score(x[b:], target[b:])
        assert score > (0.99 if d < n else 0.0)  # more features than samples: only better than the mean
        assert probe.alpha_ in probe.alphas
    # features unrelated to the target: cross-validated over groups, nothing to find on new data
    noise = torch.randn(200, 5, generator=g)
    probe = RidgeProbe().fit(noise[:150], torch.randn(150, generator=g), groups=torch.arange(150) // 10)
    assert probe.score(noise[150:], torch.randn(50, generator=g)) < 0.1


def _videos(n=4, t=10, size=16, seed=0):
    options = {"n_train": n, "n_test": 2, "frames": t, "size": size, "seed": seed}
    return load_dataset(DataConfig(name="moving-shapes", val_fraction=0.0, options=options), 0)


def test_true_centres_as_features_track_perfectly_and_jitter_is_zero_at_constant_velocity():
    s = _videos(n=8, t=12, size=32)
    truth = {k: normalised_centres(v)[:, :, 0].reshape(-1, 2)
             for k, v in (("train", s.train), ("test", s.test))}
    result = tracking_r2(truth["train"], s.train, truth["test"], s.test)
    assert result["r2"] > 0.9999 and result["test_frames"] == 24
    t = torch.arange(9, dtype=torch.float64).view(1, 9, 1, 1)
    assert jitter(0.1 + 0.02 * t.expand(2, 9, 3, 2)) == pytest.approx(0.0, abs=1e-20)
    assert jitter((0.01 * t ** 2).expand(2, 9, 3, 2)) == pytest.approx(2 * 0.02 ** 2)
    wobbly = torch.randn(3, 9, 4, 2, dtype=torch.float64)
    assert relative_jitter(0.1 * wobbly) == pytest.approx(relative_jitter(wobbly))  # scale-free
    assert relative_jitter(0.1 + 0.02 * t.expand(2, 9, 3, 2)) == pytest.approx(0.0, abs=1e-20)


def test_frame_classification_scores_every_test_frame():
    s = _videos(n=6, t=4, size=16)
    g = torch.Generator().manual_seed(0)

    def noisy_onehot(v):  # informative but not separable: the probe converges in a few steps
        labels = v.frame_labels()
        return torch.nn.functional.one_hot(labels, 3).float() + 0.3 * torch.randn(len(labels), 3, generator=g)

    train, test = noisy_onehot(s.train), noisy_onehot(s.test)
    cls = frame_classification(train, s.train, test, s.test, train, s.train, step=2)
    assert cls["accuracy"] >= 0.75 and cls["train_frames"] == 12 and cls["test_frames"] == 8


def test_drawings_put_each_keypoint_where_it_is(tmp_path):
    frames = torch.zeros(5, 3, 8, 10)
    points = torch.tensor([[[-1.0, -1.0], [1.0, 1.0]]]).repeat(5, 1, 1)
    points[:, 0, 0] += 0.4 * torch.arange(5)  # the first keypoint moves right, the second stays
    images = draw_keypoints(frames, points, scale=4, trail=2)
    assert len(images) == 5 and images[0].size == (40, 32)
    first, second = palette(2)
    arr = np.asarray(images[0])
    assert tuple(arr[2, 2]) == first and tuple(arr[-3, -3]) == second  # top-left, bottom-right
    save_strip(tmp_path / "s.png", images, frames=3)
    save_gif(tmp_path / "s.gif", images, fps=5)
    assert Image.open(tmp_path / "s.png").size == (3 * 42 + 2, 36)
    gif = Image.open(tmp_path / "s.gif")
    assert gif.n_frames == 5 and gif.info["duration"] == 200


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("dsae")
    data = {"name": "moving-shapes", "n_train": 8, "n_test": 2, "frames": 6, "size": 32, "clip_length": 3,
            "val_fraction": 0.5}
    aevision.pretrain({"seed": 0, "output_dir": str(out), "data": data,
                       "model": {"name": "dsae", "channels": [8], "keypoints": 4},
                       "regularizers": [{"name": "smoothness"}],
                       "train": {"epochs": 1, "batch_size": 4, "progress": False}})
    return out


def test_video_keypoints_follow_the_encoder(trained):
    model = aevision.load(trained)
    s = _videos(n=3, t=5, size=32)
    kp = video_keypoints(model, s.train, batch_size=4)
    assert kp.points.shape == (3, 5, 4, 2) and kp.presence.shape == (3, 5, 4)
    torch.testing.assert_close(kp.features(), aevision.encode(model, s.train))
    assert ((kp.presence > 0) & (kp.presence <= 1)).all()


def test_keypoints_command_writes_metrics_strips_and_gifs(trained, tmp_path, capsys):
    out = tmp_path / "kp"
    frames_dir = tmp_path / "frames"
    s = _videos(n=2, t=6, size=32)
    for i, video in enumerate(s.train.frames):
        (frames_dir / f"v{i}").mkdir(parents=True)
        for t, frame in enumerate(video):
            Image.fromarray(frame.permute(1, 2, 0).numpy()).save(frames_dir / f"v{i}" / f"{t}.png")
    code = main(["keypoints", str(trained), str(frames_dir), "--keep", "2", "--save-model",
                 str(tmp_path / "pruned"), "--show", "1", "-o", str(out)])
    assert code == 0
    metrics = json.loads((out / "keypoints.json").read_text())
    assert metrics["keypoints"] == 2 and metrics["sequences"] == 2 and metrics["jitter"] >= 0
    assert len(metrics["pruned"]["kept"]) == 2
    assert Image.open(out / "sequence0.gif").n_frames == 6 and (out / "sequence0.png").is_file()
    assert aevision.load(tmp_path / "pruned").code_dim == 4
    dense = tmp_path / "dense"
    aevision.pretrain({"output_dir": str(dense), "data": {"name": "digits", "limit": 40},
                       "model": {"name": "dense", "code_dim": 4},
                       "train": {"epochs": 1, "progress": False}})
    capsys.readouterr()
    assert main(["keypoints", str(dense), str(frames_dir), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "has no keypoints" in err
    assert main(["keypoints", str(trained), "--dataset", "digits", "-o", str(out)]) == 2
    assert "not a video dataset" in capsys.readouterr().err


def test_keypoints_command_scores_the_runs_held_out_sequences(trained, tmp_path):
    out = tmp_path / "kp"
    assert main(["keypoints", str(trained), "--show", "0", "-o", str(out)]) == 0  # the run's own data
    metrics = json.loads((out / "keypoints.json").read_text())
    assert metrics["split"] == "test" and metrics["sequences"] == 2 and metrics["data"]["n_train"] == 8
    assert -10 < metrics["tracking"]["r2"] <= 1 and metrics["tracking"]["test_frames"] == 12
    assert 0 <= metrics["classification"]["accuracy"] <= 1
    assert metrics["jitter_ground_truth"] >= 0 and len(metrics["mean_presence"]) == 4


def test_keypoints_split_val_of_a_limited_run_is_its_own_held_out_sequences(tmp_path):
    """data.limit was dropped: 'val' was carved from every sequence, held training sequences of the
    model, and the probe's training split grew to sequences the run never had."""
    out = tmp_path / "dsae"
    data = {"name": "moving-shapes", "n_train": 12, "n_test": 2, "frames": 4, "size": 32, "limit": 6,
            "val_fraction": 0.34}
    aevision.pretrain({"seed": 0, "output_dir": str(out), "data": data,
                       "model": {"name": "dsae", "channels": [8], "keypoints": 4},
                       "train": {"epochs": 1, "batch_size": 4, "progress": False}})
    held = json.loads((out / "summary.json").read_text())["data"]["val"]
    assert main(["keypoints", str(out), "--split", "val", "--show", "0", "-o", str(tmp_path / "kp")]) == 0
    metrics = json.loads((tmp_path / "kp" / "keypoints.json").read_text())
    assert metrics["split"] == "val" and metrics["sequences"] == held["sequences"]  # of the 6 it drew, not 12
