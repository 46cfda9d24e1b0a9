"""``dsae``: the deep spatial autoencoder (Finn et al. 2016, "Deep Spatial Autoencoders for
Visuomotor Learning").

    image (N, C, H, W) -> conv stack -> K feature maps -> spatial softmax -> K keypoints (x, y)
    code z = (x_1, y_1, ..., x_K, y_K): (N, 2K) in [-1, 1]
    decoder: dense layers z -> a downsampled grey image (H / downsample, W / downsample)

The code can only say *where* K features are, so the autoencoder must put its keypoints on
the things that move; reconstructing a small grey image (the paper's 60x60 from 240x240) keeps the
decoder from spending capacity on texture and colour. ``Parts.target`` maps an input batch to that
image, so the training engine and the loss stay generic.

Feature presence (the softmax peak) ranks keypoints: :func:`prune_keypoints` keeps the K' most
present ones of a trained model, as the paper prunes keypoints that do not track anything.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aevision.data.imageset import float_batches
from aevision.errors import AevisionError, ConfigError
from aevision.models.base import Autoencoder, Parts
from aevision.models.dense import mlp
from aevision.models.inference import eval_mode
from aevision.models.layers import Activation, make_activation
from aevision.models.registry import MODELS, build_model
from aevision.models.spatial_softmax import SpatialSoftmax
from aevision.validation import check

LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as the data loaders' RGB -> grey conversion


class DownsampledTarget(nn.Module):
    """What the DSAE reconstructs: (N, C, H, W) -> (N, 1 or C, h, w), area-averaged."""

    def __init__(self, size: tuple[int, int], grey: bool):
        super().__init__()
        self.size, self.grey = size, grey

    def forward(self, x: Tensor) -> Tensor:
        if self.grey and x.shape[1] == 3:
            w = x.new_tensor(LUMA).view(1, 3, 1, 1)
            x = (x * w).sum(dim=1, keepdim=True)
        return F.adaptive_avg_pool2d(x, self.size)

    def extra_repr(self) -> str:
        return f"size={self.size}, grey={self.grey}"


class KeypointEncoder(nn.Module):
    """conv stack + spatial softmax; ``forward`` gives the (N, 2K) code, ``keypoints`` more."""

    def __init__(self, features: nn.Sequential, softmax: SpatialSoftmax):
        super().__init__()
        self.features = features
        self.softmax = softmax

    def keypoints(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Keypoints (N, K, 2) as (x, y) in [-1, 1] and their presence (N, K) in (0, 1]."""
        return self.softmax(self.features(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.keypoints(x)[0].flatten(1)

    @property
    def num_keypoints(self) -> int:
        return int(self.features[-1].out_channels)  # the last layer is the keypoint conv


def _stack(c_in: int, channels: Sequence[int], kernels: Sequence[int], stride: int, batch_norm: bool,
           activation: str) -> nn.Sequential:
    """conv layers; every one but the last (the keypoint layer) has [BN +] activation.

    The keypoint layer stays linear: a ReLU there can zero a whole map, which pins its keypoint to
    the centre with no gradient to bring it back.
    """
    layers: list[nn.Module] = []
    prev = c_in
    for i, (c, k) in enumerate(zip(channels, kernels, strict=True)):
        last = i == len(channels) - 1
        bn = batch_norm and not last
        layers.append(nn.Conv2d(prev, c, k, stride if i == 0 else 1, k // 2, bias=not bn))
        if not last:
            if bn:
                layers.append(nn.BatchNorm2d(c))
            layers.append(make_activation(activation))
        prev = c
    return nn.Sequential(*layers)


@MODELS.register("dsae", "deep spatial autoencoder: conv -> spatial-softmax keypoints (code = 2 x "
                 "keypoints) -> dense decoder of a downsampled grey image")
def dsae(
    input_shape: tuple[int, int, int],
    *,
    channels: list[int] | None = None,
    keypoints: int | None = None,
    code_dim: int | None = None,
    kernel_sizes: list[int] | None = None,
    stride: int = 2,
    batch_norm: bool = True,
    activation: Activation = "relu",
    temperature: float = 1.0,
    learn_temperature: bool = True,
    downsample: int = 4,
    grey: bool = True,
    hidden: list[int] | None = None,
    output_activation: Activation = "sigmoid",
) -> Parts:
    """``channels``: the conv layers before the keypoint layer (default [16, 16]);
    ``keypoints``: K (default 16), the code has 2K numbers (``code_dim`` = 2K may be given
    instead, for configs that set every model's code size); ``kernel_sizes``: one per conv layer
    including the keypoint layer (default 5, then 3s); ``stride``: of the first conv;
    ``downsample``: the target image is the input's size / downsample, grey unless ``grey=false``;
    ``hidden``: decoder layers (default [256]; [] is the paper's single linear layer, which can
    only draw an object near where it usually is: a linear map of (x, y) cannot move a blob far)."""
    channels = list(channels) if channels is not None else [16, 16]
    check(all(c >= 1 for c in channels), "model.channels", channels, "a list of positive integers")
    if code_dim is not None:
        check(code_dim >= 2 and code_dim % 2 == 0, "model.code_dim", code_dim,
              "an even integer >= 2 (two coordinates per keypoint)")
        if keypoints is not None and keypoints != code_dim // 2:
            raise ConfigError("model.code_dim", code_dim,
                              f"2 x model.keypoints ({2 * keypoints}), or leave one of them unset")
        keypoints = code_dim // 2
    keypoints = 16 if keypoints is None else keypoints
    check(keypoints >= 1, "model.keypoints", keypoints, "an integer >= 1")
    n_layers = len(channels) + 1
    kernels = list(kernel_sizes) if kernel_sizes is not None else [5] + [3] * (n_layers - 1)
    check(len(kernels) == n_layers and all(k >= 1 and k % 2 == 1 for k in kernels),
          "model.kernel_sizes", kernel_sizes,
          f"{n_layers} odd integers >= 1 (one per conv layer, the keypoint layer included)")
    check(stride >= 1, "model.stride", stride, "an integer >= 1")
    check(temperature > 0, "model.temperature", temperature, "a number > 0")
    check(downsample >= 1, "model.downsample", downsample, "an integer >= 1")
    hidden = list(hidden) if hidden is not None else [256]
    check(all(h >= 1 for h in hidden), "model.hidden", hidden, "a list of positive integers")
    c_in, height, width = input_shape
    target_size = (max(1, round(height / downsample)), max(1, round(width / downsample)))
    c_out = 1 if grey else c_in
    features = _stack(c_in, [*channels, keypoints], kernels, stride, batch_norm, activation)
    encoder = KeypointEncoder(features, SpatialSoftmax(temperature, learn_temperature))
    n_out = c_out * target_size[0] * target_size[1]
    decoder = nn.Sequential(
        *mlp([2 * keypoints, *hidden, n_out], activation, output_activation, False, 0.0),
        nn.Unflatten(1, (c_out, *target_size)),
    )
    return Parts(encoder, decoder, 2 * keypoints, target=DownsampledTarget(target_size, grey),
                 code_range=(-1.0, 1.0),
                 notes={"keypoints": keypoints, "target_shape": (c_out, *target_size)})


def keypoint_encoder(model: Autoencoder) -> KeypointEncoder:
    """The model's keypoint encoder, or a one-line error for models without keypoints."""
    if not isinstance(model.encoder, KeypointEncoder):
        raise AevisionError(f"model {model.spec.get('name', type(model.encoder).__name__)!r} has no "
                            f"keypoints (train one with model.name=dsae)")
    return model.encoder


@torch.no_grad()
def presence_scores(model: Autoencoder, frames: Tensor, batch_size: int = 512) -> tuple[Tensor, Tensor]:
    """Mean presence (K,) and mean keypoints (K, 2) over ``frames`` ((N, C, H, W), float or uint8)."""
    enc = keypoint_encoder(model)
    device = next(model.parameters()).device
    presence = torch.zeros(enc.num_keypoints, dtype=torch.float64)
    points = torch.zeros(enc.num_keypoints, 2, dtype=torch.float64)
    with eval_mode(model):
        for x in float_batches(frames, batch_size, device):
            kp, p = enc.keypoints(x)
            presence += p.double().sum(0).cpu()
            points += kp.double().sum(0).cpu()
    n = max(1, len(frames))
    return (presence / n).float(), (points / n).float()


def prune_keypoints(model: Autoencoder, frames: Tensor, keep: int) -> Autoencoder:
    """A smaller DSAE that keeps the ``keep`` keypoints with the highest mean presence on ``frames``.

    The pruned keypoints leave the code; the decoder's first layer absorbs their mean over
    ``frames`` into its bias (so the reconstruction changes as little as a constant can make it).
    The result is an ordinary model of the registry (``keypoints=keep``): it saves and loads like
    any other, and its spec records which keypoints of which model it kept.
    """
    enc = keypoint_encoder(model)
    k = enc.num_keypoints
    if not 1 <= keep <= k:
        raise ConfigError("keep", keep, f"an integer in [1, {k}] (the model has {k} keypoints)")
    presence, mean_points = presence_scores(model, frames)
    kept = presence.argsort(descending=True)[:keep].sort().values
    dropped = torch.tensor([i for i in range(k) if i not in set(kept.tolist())], dtype=torch.long)
    options = dict(model.spec.get("options", {}))
    options.pop("code_dim", None)
    options["keypoints"] = keep
    regs = model.spec.get("regularizers", [])
    small = build_model("dsae", model.input_shape, options, regs, model.reconstruction)
    state = copy.deepcopy(model.state_dict())
    last = f"encoder.features.{len(enc.features) - 1}"
    state[f"{last}.weight"] = state[f"{last}.weight"][kept]
    if f"{last}.bias" in state:
        state[f"{last}.bias"] = state[f"{last}.bias"][kept]
    first = next(n for n, m in model.decoder.named_modules() if isinstance(m, nn.Linear))
    w, b = state[f"decoder.{first}.weight"], state[f"decoder.{first}.bias"]
    cols = torch.stack((2 * kept, 2 * kept + 1), dim=1).flatten()
    if len(dropped):
        gone = torch.stack((2 * dropped, 2 * dropped + 1), dim=1).flatten()
        b = b + w[:, gone] @ mean_points[dropped].flatten().to(w)
    state[f"decoder.{first}.weight"], state[f"decoder.{first}.bias"] = w[:, cols], b
    small.load_state_dict(state, strict=True)
    small.spec["pruned"] = {"from_keypoints": k, "kept": kept.tolist(),
                            "presence": [round(float(presence[i]), 6) for i in range(k)]}
    return small.to(next(model.parameters()).device).train(model.training)
