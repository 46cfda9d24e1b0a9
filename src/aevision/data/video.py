"""Video data: sequences of ordered frames, and the clips a temporal objective trains on.

An :class:`ImageSet` is a bag of images; a :class:`VideoSet` keeps frame order, which temporal
regularizers (keypoint smoothness) need. Splits, limits and validation act on whole sequences, so
frames of one video never end up on both sides of a split. Everything image-based (``encode``,
probes, ``aevision encode --dataset``) sees the frames through :meth:`VideoSet.frame_set`.

Training on clips: :class:`ClipWindows` presents the windows of ``L`` consecutive frames as an
(M, L, C, H, W) uint8 "tensor" that :class:`~aevision.data.batches.TensorBatches` can gather from,
without copying a frame once per window it belongs to.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from aevision.data.imageset import ImageSet, Skipped, StackedSet, to_float
from aevision.errors import ConfigError


@dataclass
class VideoSet(StackedSet):
    """``frames``: (N, T, C, H, W) uint8, N sequences of T ordered frames.

    ``labels``: (N,) int64 per sequence or None; ``centres``: (N, T, K, 2) float32 ground-truth
    (x, y) pixel positions of K tracked objects (NaN where an object is absent) or None;
    ``files``: for frames read from disk, the source of each sequence (folder, first frame).
    """

    STACK = "frames"
    frames: Tensor
    labels: Tensor | None = None
    classes: list[str] | None = None
    name: str = ""
    centres: Tensor | None = None
    files: list[str] | None = None
    skipped: list[Skipped] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.frames.dtype != torch.uint8 or self.frames.dim() != 5:
            raise ValueError(
                f"VideoSet.frames must be a (N, T, C, H, W) uint8 tensor, got "
                f"{tuple(self.frames.shape)} {self.frames.dtype}"
            )
        n, t = self.frames.shape[:2]
        if self.labels is not None and self.labels.shape != (n,):
            raise ValueError(f"VideoSet.labels must have shape ({n},), got {tuple(self.labels.shape)}")
        if self.centres is not None and (self.centres.dim() != 4 or self.centres.shape[:2] != (n, t)
                                         or self.centres.shape[3] != 2):
            raise ValueError(f"VideoSet.centres must have shape ({n}, {t}, K, 2), "
                             f"got {tuple(self.centres.shape)}")

    @property
    def sequence_length(self) -> int:
        return int(self.frames.shape[1])

    @property
    def images(self) -> Tensor:
        """All frames, sequence after sequence: an (N*T, C, H, W) view."""
        return self.frames.flatten(0, 1)

    def floats(self, indices: Tensor | slice | None = None) -> Tensor:
        """Frames of all (or some) sequences as float32 in [0, 1]: (n, T, C, H, W)."""
        return to_float(self.frames if indices is None else self.frames[indices])

    def subset(self, indices: Tensor | list[int] | range) -> VideoSet:
        """The sequences at ``indices`` (whole sequences: splits never cut a video); the files
        skipped while loading stay listed."""
        idx = torch.as_tensor(list(indices) if isinstance(indices, range) else indices, dtype=torch.long)
        return VideoSet(
            frames=self.frames[idx],
            labels=None if self.labels is None else self.labels[idx],
            classes=self.classes,
            name=self.name,
            centres=None if self.centres is None else self.centres[idx],
            files=None if self.files is None else [self.files[i] for i in idx.tolist()],
            skipped=list(self.skipped),
        )

    def with_images(self, images: Tensor) -> VideoSet:
        """The same sequences with their frames replaced by ``images`` ((N*T, C', H', W'))."""
        n, t = self.frames.shape[:2]
        return VideoSet(images.reshape(n, t, *images.shape[1:]), self.labels, self.classes,
                        self.name, self.centres, self.files, self.skipped)

    def frame_labels(self) -> Tensor | None:
        """Each frame's label (its sequence's): (N*T,)."""
        return None if self.labels is None else self.labels.repeat_interleave(self.sequence_length)

    def frame_set(self) -> ImageSet:
        """The frames as an :class:`ImageSet` (labels and file names per frame)."""
        t = self.sequence_length
        files = None if self.files is None else [f"{f}#{i}" for f in self.files for i in range(t)]
        return ImageSet(self.images, self.frame_labels(), self.classes, self.name, files, self.skipped)

    def clips(self, length: int, stride: int | None = None, field: str = "data.clip_length") -> ClipWindows:
        """Windows of ``length`` consecutive frames, starting every ``stride`` frames."""
        if length > self.sequence_length:
            raise ConfigError(field, length, f"at most the sequence length of {self.name or 'the data'} "
                                             f"({self.sequence_length} frames)")
        return ClipWindows(self.frames, length, stride or length)


class ClipWindows:
    """Clips of ``length`` consecutive frames, gathered on demand: behaves as (M, L, C, H, W) uint8.

    Only what :class:`~aevision.data.batches.TensorBatches` uses: ``len``, ``x[idx]`` with an index
    tensor, ``.device`` and ``.to(device)``. Overlapping windows (``stride < length``) share frames
    instead of copying them.
    """

    def __init__(self, frames: Tensor, length: int, stride: int):
        if length < 1 or stride < 1:
            raise ValueError(f"clip length and stride must be >= 1, got {length}, {stride}")
        n, t = frames.shape[:2]
        self.length, self.stride = length, stride
        self.flat = frames.flatten(0, 1)
        per_seq = torch.arange(0, t - length + 1, stride)
        self.starts = (torch.arange(n)[:, None] * t + per_seq[None, :]).flatten()
        self.offsets = torch.arange(length)

    def __len__(self) -> int:
        return int(self.starts.numel())

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), self.length, *self.flat.shape[1:])

    @property
    def device(self) -> torch.device:
        return self.flat.device

    @property
    def dtype(self) -> torch.dtype:
        return self.flat.dtype

    def to(self, device: torch.device | str) -> ClipWindows:
        out = ClipWindows.__new__(ClipWindows)
        out.length, out.stride = self.length, self.stride
        out.flat = self.flat.to(device)
        out.starts, out.offsets = self.starts.to(device), self.offsets.to(device)
        return out

    def __getitem__(self, idx: Tensor) -> Tensor:
        idx = torch.as_tensor(idx, device=self.starts.device)
        return self.flat[self.starts[idx].unsqueeze(-1) + self.offsets]


def training_data(data: ImageSet | VideoSet, clip_length: int | None, clip_stride: int | None = None
                  ) -> Tensor | ClipWindows:
    """What the training loop iterates over: single frames/images, or clips of ordered frames."""
    if clip_length is None:
        return data.images
    if not isinstance(data, VideoSet):
        raise ConfigError("data.clip_length", clip_length,
                          f"null: {data.name or 'this dataset'} is a set of images with no frame order "
                          f"(clips need a video dataset such as moving-shapes or frames:PATH)")
    return data.clips(clip_length, clip_stride)
