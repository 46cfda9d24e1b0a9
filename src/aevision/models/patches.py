"""``patches``: a single-layer autoencoder over whitened k x k patches, at every position.

The route of Coates, Lee & Ng (AISTATS 2011), the best single-layer unsupervised features on
CIFAR-10 of their day: cut every k x k patch (stride ``stride``), normalise its brightness and
contrast, whiten it (ZCA: decorrelated pixels, so the features learn edges instead of the mean
colour), and code it with ``features`` units. Whitening mattered more than the learning algorithm
in their study, and so did many features; both are cheap here because the "network" is one 1 x 1
convolution over the patch vectors. With a top-k code (``regularizers: [{name: topk, over:
channels}]``, Makhzani & Frey's k-sparse autoencoder, the autoencoder kin of their k-means) the
units become a dictionary of patch prototypes.

Shapes, for input (N, C, H, W): patch vectors P = C k^2 on a grid h x w = (H - k) // s + 1 by
(W - k) // s + 1; the code map (N, features, h, w), flattened as the code; the decoder rebuilds
the *whitened* patches (N, P, h, w), which is what ``target`` gives of the input. Classifiers read
the code map pooled by region (``features: {source: stages, pool: 2}``: the paper's quadrants).

The whitening is fitted once, from the first training batch (all its patches, in float64, summed
over processes under DDP so every rank whitens alike), and then frozen; it is saved with the
weights. Until fitted (an untrained model) it only centres and normalises patches.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from aevision.models.base import Parts
from aevision.models.conv import ConvEncoder
from aevision.models.layers import Activation, make_activation, output_range
from aevision.models.registry import MODELS
from aevision.validation import check


def patch_grid(height: int, width: int, patch_size: int, stride: int) -> tuple[int, int]:
    """(h, w): how many patches fit down and across an image of (height, width)."""
    return (height - patch_size) // stride + 1, (width - patch_size) // stride + 1


class PatchWhitening(nn.Module):
    """(N, C, H, W) -> (N, P, h, w): each patch contrast-normalised, then ZCA-whitened."""

    def __init__(self, channels: int, patch_size: int, stride: int, contrast_eps: float, whiten_eps: float):
        super().__init__()
        self.patch_size, self.stride = patch_size, stride
        self.contrast_eps, self.whiten_eps = contrast_eps, whiten_eps
        dim = channels * patch_size * patch_size
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("zca", torch.eye(dim))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    def normalized_patches(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, L, P): every patch minus its mean, over sqrt(its variance + eps)."""
        u = F.unfold(x.float(), self.patch_size, stride=self.stride).transpose(1, 2)
        u = u - u.mean(2, keepdim=True)
        return u / (u.var(2, keepdim=True, unbiased=False) + self.contrast_eps).sqrt()

    @torch.no_grad()
    def fit(self, patches: Tensor) -> None:
        """Mean and ZCA matrix V diag(1 / sqrt(e + eps)) V^T of ``patches`` (M, P), over every
        process's share when running distributed."""
        p = patches.double()
        stats = torch.cat([p.sum(0), (p.T @ p).flatten(), p.new_tensor([len(p)])])
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(stats)
        dim = p.shape[1]
        n = stats[-1]
        mean = stats[:dim] / n
        cov = stats[dim:-1].view(dim, dim) / n - torch.outer(mean, mean)
        e, v = torch.linalg.eigh(cov)
        self.mean.copy_(mean)
        self.zca.copy_(v @ torch.diag((e.clamp_min(0) + self.whiten_eps).rsqrt()) @ v.T)
        self.fitted.fill_(True)

    def forward(self, x: Tensor) -> Tensor:
        n, _, height, width = x.shape
        with torch.autocast(device_type=x.device.type, enabled=False):
            u = self.normalized_patches(x)
            if self.training and not bool(self.fitted):
                self.fit(u.flatten(0, 1))
            w = (u - self.mean) @ self.zca  # zca is symmetric
        return w.transpose(1, 2).reshape(n, -1, *patch_grid(height, width, self.patch_size, self.stride))

    def extra_repr(self) -> str:
        return (f"patch_size={self.patch_size}, stride={self.stride}, contrast_eps={self.contrast_eps:g}, "
                f"whiten_eps={self.whiten_eps:g}")


class WhitenedTarget(nn.Module):
    """The decoder's target: the input's whitened patches, by the encoder's own whitening (held
    outside the module tree, so its buffers are saved once, under the encoder)."""

    def __init__(self, whitening: PatchWhitening):
        super().__init__()
        self._whitening = [whitening]

    def forward(self, x: Tensor) -> Tensor:
        return self._whitening[0](x)


@MODELS.register("patches", "single-layer autoencoder over whitened k x k patches at every position "
                 "(Coates, Lee & Ng 2011)")
def patches(
    input_shape: tuple[int, int, int],
    *,
    patch_size: int = 6,
    stride: int = 1,
    features: int = 1600,
    contrast_eps: float = 10 / 255**2,
    whiten_eps: float = 0.1,
    activation: Activation = "relu",
) -> Parts:
    """``contrast_eps`` is Coates et al.'s 10 for 0-255 pixels, on this library's [0, 1] scale;
    ``whiten_eps`` their 0.1 (it bounds the gain given to the faintest patch directions)."""
    c_in, height, width = input_shape
    check(patch_size >= 1 and patch_size <= min(height, width), "model.patch_size", patch_size,
          f"an integer in [1, {min(height, width)}] (the image's smaller side)")
    check(stride >= 1, "model.stride", stride, "an integer >= 1")
    check(features >= 1, "model.features", features, "an integer >= 1")
    check(contrast_eps > 0, "model.contrast_eps", contrast_eps, "a number > 0")
    check(whiten_eps > 0, "model.whiten_eps", whiten_eps, "a number > 0")
    whitening = PatchWhitening(c_in, patch_size, stride, contrast_eps, whiten_eps)
    grid = patch_grid(height, width, patch_size, stride)
    dim = c_in * patch_size * patch_size
    stage = nn.Sequential(whitening, nn.Conv2d(dim, features, 1), make_activation(activation))
    code_shape = (features, *grid)
    decoder = nn.Sequential(nn.Unflatten(1, code_shape), nn.Conv2d(features, dim, 1))
    return Parts(ConvEncoder(nn.ModuleList([stage]), nn.Flatten()), decoder,
                 features * grid[0] * grid[1], target=WhitenedTarget(whitening),
                 code_range=output_range(activation),
                 notes={"code_shape": code_shape, "channels": [features], "reconstructs": "whitened patches",
                        "stage_sizes": [(height, width), grid], "patch_dim": dim})
