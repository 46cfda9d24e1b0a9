"""Video data: moving-shapes (deterministic, true centres), frames:PATH, clips for training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from aevision.config import DataConfig
from aevision.data import VideoSet, load_dataset, training_data
from aevision.data.batches import TensorBatches
from aevision.data.moving_shapes import bounce, moving_shapes
from aevision.data.shapes import textured_background
from aevision.errors import DataError

SMALL = {"n_train": 12, "n_test": 2, "frames": 8, "size": 32}


def test_moving_shapes_is_deterministic_per_seed():
    a = load_dataset(DataConfig(name="moving-shapes", options=SMALL), seed=0)
    b = load_dataset(DataConfig(name="moving-shapes", options=SMALL), seed=0)
    c = load_dataset(DataConfig(name="moving-shapes", options={**SMALL, "seed": 7}), seed=0)
    for split in ("train", "val", "test"):
        x, y = getattr(a, split), getattr(b, split)
        assert torch.equal(x.frames, y.frames) and torch.equal(x.labels, y.labels)
        assert torch.equal(x.centres.nan_to_num(-1), y.centres.nan_to_num(-1))
    assert not torch.equal(a.test.frames, c.test.frames)
    assert isinstance(a.train, VideoSet) and a.train.frames.shape[1:] == (8, 3, 32, 32)
    assert len(a.train) + len(a.val) == 12 and len(a.test) == 2 and len(a.val) >= 1
    assert a.train.classes == ["circle", "square", "triangle"]


def test_moving_shapes_ground_truth_is_where_the_shape_is_drawn():
    video, centres, labels = moving_shapes(3, 16, 48, seed=3, max_shapes=1, noise=0.0)
    assert centres.shape == (3, 16, 1, 2) and labels.shape == (3,)
    frames = video.float()
    # the generator draws the backdrops first from its seeded stream: the same call gives them
    background = torch.from_numpy(textured_background(np.random.default_rng(3), 3, 48, 48, grain=0.0)) * 255
    for i in range(3):
        for t in (0, 7, 15):
            mask = (frames[i, t] - background[i]).abs().amax(dim=0) > 20
            ys, xs = torch.nonzero(mask, as_tuple=True)
            centroid = torch.stack((xs.float().mean(), ys.float().mean()))
            assert torch.dist(centroid, centres[i, t, 0]) < 1.0  # circle/square/triangle centroids
    # every shape stays inside the frame and changes direction only at a wall
    x = bounce(50.0, 3.0, 0.0, 100.0, 200)
    assert x.min() >= 0.0 and x.max() <= 100.0 and x.max() > 97 and x.min() < 3
    steps = np.abs(np.diff(x))
    interior = (x[1:] > 3) & (x[1:] < 97) & (x[:-1] > 3) & (x[:-1] < 97)
    assert np.allclose(steps[interior], 3.0) and (steps <= 3.0 + 1e-9).all()


def test_moving_shapes_distractors_and_absent_slots():
    _, centres, _ = moving_shapes(20, 4, 32, seed=0, max_shapes=3)
    present = torch.isfinite(centres[:, 0, :, 0])
    assert present[:, 0].all()  # the main shape is in every sequence
    assert (present.sum(1) >= 1).all() and (present.sum(1) <= 3).all() and (~present).any()
    assert (present[:, 2] <= present[:, 1]).all()  # slots fill in order


def test_clip_windows_gather_consecutive_frames_for_the_batches():
    frames = torch.arange(3 * 7, dtype=torch.uint8).view(3, 7, 1, 1, 1).expand(3, 7, 1, 2, 2).contiguous()
    videos = VideoSet(frames)
    clips = videos.clips(3)  # stride defaults to the length: 2 windows per sequence
    assert len(clips) == 6 and clips.shape == (6, 3, 1, 2, 2)
    assert clips[torch.tensor([0, 1, 2])][:, :, 0, 0, 0].tolist() == [[0, 1, 2], [3, 4, 5], [7, 8, 9]]
    overlapping = videos.clips(3, stride=1)
    assert len(overlapping) == 15
    assert overlapping[torch.tensor([14])][0, :, 0, 0, 0].tolist() == [18, 19, 20]
    batches = list(TensorBatches(training_data(videos, 3, 1), 4, seed=0).epoch(0))
    assert [b.shape for b in batches] == [(4, 3, 1, 2, 2)] * 3 + [(3, 3, 1, 2, 2)]
    seen = torch.cat(batches)[:, :, 0, 0, 0] * 255
    assert (seen[:, 1] - seen[:, 0] == 1).all() and (seen[:, 2] - seen[:, 1] == 1).all()
    assert training_data(videos, None).shape == (21, 1, 2, 2)  # single frames


def test_video_frames_through_the_image_api():
    s = load_dataset(DataConfig(name="moving-shapes", channels=1, image_size=[16, 16], options=SMALL), 0)
    assert s.train.image_shape == (1, 16, 16) and s.train.frames.shape[1] == 8
    frames = s.test.frame_set()
    assert len(frames) == 16 and frames.labels.tolist() == s.test.labels.repeat_interleave(8).tolist()


def _frame(path, value, size=(6, 5)):
    Image.new("L", size, value).save(path)


def test_frames_folder_layouts_order_and_chunks(tmp_path, caplog):
    one = tmp_path / "one"
    one.mkdir()
    for i in (1, 2, 10, 3):  # natural order: 1, 2, 3, 10
        _frame(one / f"f{i}.png", i * 10)
    s = load_dataset(DataConfig(name=f"frames:{one}", val_fraction=0.0), 0)
    assert len(s.train) == 1 and s.train.labels is None
    assert s.train.frames[0, :, 0, 0, 0].tolist() == [10, 20, 30, 100]

    labelled = tmp_path / "labelled"
    for cls, lengths in (("walk", (5, 3)), ("run", (4,))):
        for v, n in enumerate(lengths):
            d = labelled / cls / f"video{v}"
            d.mkdir(parents=True)
            for i in range(n):
                _frame(d / f"{i:03d}.png", i)
    (labelled / "run" / "video0" / "notes.txt").write_text("x")
    s = load_dataset(DataConfig(name=f"frames:{labelled}", val_fraction=0.0, options={"length": 2}), 0)
    assert s.train.classes == ["run", "walk"]
    assert s.train.frames.shape[:2] == (5, 2)  # chunks of 2: run 4 -> 2, walk 5 -> 2, 3 -> 1
    assert s.train.labels.tolist() == [0, 0, 1, 1, 1]
    assert "tail frames left out" in caplog.text and "notes.txt" in str([k.path for k in s.train.skipped])
    split = load_dataset(DataConfig(name=f"frames:{labelled}", val_fraction=0.0,
                                    options={"length": 2, "test_fraction": 0.3}), 0)
    sources = {f.rsplit("[", 1)[0] for f in split.test.files}
    assert len(sources) == 1  # the test split takes whole videos
    assert not sources & {f.rsplit("[", 1)[0] for f in split.train.files}
    assert len(split.train) + len(split.test) == 5


def test_frames_folder_errors(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        load_dataset(DataConfig(name=f"frames:{tmp_path / 'missing'}"), 0)
    a, b = tmp_path / "v" / "a", tmp_path / "v" / "b"
    a.mkdir(parents=True)
    b.mkdir()
    _frame(a / "0.png", 0)
    _frame(b / "0.png", 0, size=(8, 8))
    with pytest.raises(DataError, match=r"frames differ in size .* data.image_size"):
        load_dataset(DataConfig(name=f"frames:{tmp_path / 'v'}"), 0)
    with pytest.raises(DataError, match="longer than every video"):
        load_dataset(DataConfig(name=f"frames:{tmp_path / 'v'}", image_size=[4, 4],
                                options={"length": 5}), 0)


def test_every_split_of_a_frames_folder_keeps_the_files_skipped_while_loading(tmp_path):
    for v in range(3):
        (tmp_path / f"v{v}").mkdir()
        for i in range(2):
            _frame(tmp_path / f"v{v}" / f"{i}.png", 10 * i)
    (tmp_path / "v1" / "2.png").write_bytes(b"")
    s = load_dataset(DataConfig(name=f"frames:{tmp_path}", val_fraction=0.4,
                                options={"test_fraction": 0.3}), 0)
    assert s.val is not None and s.test is not None
    for part in (s.train, s.val, s.test, s.train.frame_set()):  # summary.json lists train's
        assert [k.path for k in part.skipped] == [str(tmp_path / "v1" / "2.png")]
