"""``frames:PATH``: a user's videos stored as folders of frame images.

Three layouts are understood:

- ``PATH/*.png``: one video;
- ``PATH/<video>/*.png``: several unlabelled videos;
- ``PATH/<class>/<video>/*.png``: videos labelled by class folder.

Frames are ordered by file name in natural order (``frame_2`` before ``frame_10``). Videos have
different lengths, but a :class:`VideoSet` holds sequences of one length, so every video is cut
into consecutive chunks of ``length`` frames (default: the shortest video's length) and the
leftover tail is dropped, with a warning. The test split (``test_fraction``) takes whole videos,
so chunks of one video never sit on both sides of it.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
from torch import Tensor

from aevision.data import loading
from aevision.data.images import is_hidden
from aevision.data.imageset import Skipped
from aevision.data.registry import DATASETS, TEST_SPLIT_SEED, Source, Splits, takes_argument
from aevision.data.splits import permutation
from aevision.data.video import VideoSet
from aevision.errors import DataError
from aevision.io import user_path
from aevision.validation import check

log = logging.getLogger(__name__)


def natural_key(path: Path) -> list[object]:
    """Sort key that orders embedded numbers by value: f2 < f10."""
    return [int(s) if s.isdigit() else s.lower() for s in re.split(r"(\d+)", path.name)]


def _visible(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if not is_hidden(p.name)), key=natural_key)


def scan_videos(root: Path) -> tuple[list[tuple[Path, list[Path], int | None]], list[str] | None,
                                     list[Skipped]]:
    """(video folder, its frame files, class index) per video; class names; files left out."""
    if not root.exists():
        raise DataError(f"frames:{root}: no such folder")
    if not root.is_dir():
        raise DataError(f"frames:{root}: not a folder (expected a folder of frame images or of videos)")
    entries = _visible(root)
    subdirs = [p for p in entries if p.is_dir()]
    skipped: list[Skipped] = []
    if not subdirs:
        return [(root, [p for p in entries if p.is_file()], None)], None, skipped
    skipped += [Skipped(str(p), "file beside video folders") for p in entries if p.is_file()]
    labelled = all(any(q.is_dir() for q in _visible(d)) for d in subdirs)
    videos: list[tuple[Path, list[Path], int | None]] = []
    if not labelled:
        for d in subdirs:
            inner = _visible(d)
            skipped += [Skipped(str(p), "folder inside a video folder") for p in inner if p.is_dir()]
            videos.append((d, [p for p in inner if p.is_file()], None))
        return videos, None, skipped
    classes = [d.name for d in subdirs]
    for c, d in enumerate(subdirs):
        for v in _visible(d):
            if v.is_file():
                skipped.append(Skipped(str(v), "file beside video folders"))
                continue
            inner = _visible(v)
            skipped += [Skipped(str(p), "folder inside a video folder") for p in inner if p.is_dir()]
            videos.append((v, [p for p in inner if p.is_file()], c))
    return videos, classes, skipped


def load_videos(
    root: str | Path, *, length: int | None = None, channels: int | None = None,
    image_size: tuple[int, int] | None = None, strict: bool = False,
) -> tuple[VideoSet, list[str]]:
    """Decode every frame under ``root``; returns the chunked videos and each chunk's source video."""
    root = Path(root)
    videos, classes, skipped = scan_videos(root)
    kept = [(folder, loading.with_image_suffix(files, skipped), label) for folder, files, label in videos]
    loading.stop_if_strict(skipped, strict)
    if channels is None:
        channels = loading.guess_channels([p for _, files, _ in kept for p in files[:8]])
    decoded: list[tuple[Path, list[Tensor], int | None]] = []
    for folder, files, label in kept:
        frames = [t for _, t in loading.decode_or_skip(files, channels, image_size, skipped, strict)]
        if frames:
            decoded.append((folder, frames, label))
        else:
            skipped.append(Skipped(str(folder), "video folder with no readable frame"))
    if not decoded:
        raise DataError(f"frames:{root}: no readable frames found{loading.skipped_example(skipped)}")
    every_frame = [(str(folder), f) for folder, frames, _ in decoded for f in frames]
    loading.check_one_size(f"frames:{root}", every_frame, "frames", "has")
    chunks, labels, sources = _chunks(root, decoded, length)
    if skipped:
        log.warning("frames:%s: skipped %d files (%s)", root, len(skipped), loading.skip_reasons(skipped))
    label_tensor = torch.tensor(labels, dtype=torch.long) if classes is not None else None
    files = [f"{src}[{i}]" for i, src in enumerate(sources)]
    return VideoSet(torch.stack(chunks), label_tensor, classes, f"frames:{root}", files=files,
                    skipped=skipped), sources


def _chunks(root: Path, videos: list[tuple[Path, list[Tensor], int | None]], length: int | None
            ) -> tuple[list[Tensor], list[int | None], list[str]]:
    """Every video cut into consecutive (length, C, H, W) chunks (default length: the shortest
    video's), the tails dropped with a warning; each chunk's label and source video."""
    longest = max(len(frames) for _, frames, _ in videos)
    if length is None:
        length = min(len(frames) for _, frames, _ in videos)
    elif length > longest:
        raise DataError(f"frames:{root}: data.length={length} is longer than every video "
                        f"(the longest has {longest} frames)")
    chunks, labels, sources, dropped = [], [], [], 0
    for folder, frames, label in videos:
        n_chunks = len(frames) // length
        dropped += len(frames) - n_chunks * length
        for k in range(n_chunks):
            chunks.append(torch.stack(frames[k * length:(k + 1) * length]))
            labels.append(label)
            sources.append(str(folder))
    if dropped:
        log.warning("frames:%s: cut videos into chunks of %d frames; %d tail frames left out",
                    root, length, dropped)
    return chunks, labels, sources


@DATASETS.register("frames", "frames:PATH: videos as folders of frame images (PATH/video/*.png, "
                   "or PATH/class/video/*.png for labels)")
@takes_argument
def frames_dataset(source: Source, *, length: int | None = None, test_fraction: float = 0.0) -> Splits:
    """``length``: frames per sequence (videos are cut into chunks of it; default the shortest)."""
    if length is not None:
        check(length >= 1, "data.length", length, "an integer >= 1 or null")
    check(0 <= test_fraction < 1, "data.test_fraction", test_fraction, "a fraction in [0, 1)")
    assert source.argument is not None
    data, sources = load_videos(user_path(source.argument), length=length,
                                channels=source.channels, image_size=source.image_size,
                                strict=source.strict)
    if test_fraction == 0:
        return Splits(train=data, test=None)
    videos = sorted(set(sources))
    if len(videos) < 2:
        raise DataError(f"{data.name}: data.test_fraction={test_fraction} needs at least two videos "
                        f"(the test split takes whole videos); found one")
    order = [videos[i] for i in permutation(len(videos), TEST_SPLIT_SEED).tolist()]
    n_test = min(len(videos) - 1, max(1, round(test_fraction * len(videos))))
    test_videos = set(order[:n_test])
    test_idx = [i for i, s in enumerate(sources) if s in test_videos]
    train_idx = [i for i, s in enumerate(sources) if s not in test_videos]
    return Splits(train=data.subset(train_idx), test=data.subset(test_idx))
