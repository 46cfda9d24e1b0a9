"""A U-Net whose encoder is an autoencoder's encoder: pretrained features, then skip connections.

The encoder is any registered architecture whose encoder exposes ``forward_features(x)`` (the map
of every stage, finest first), such as ``conv``; its code head (flatten + linear) is not used and
not kept. The decoder (:class:`aevision.models.unet.UNetDecoder`) climbs back from the coarsest
map through the skips to full resolution, where a small convolution of the input joins in; a 1x1
convolution gives per-pixel class scores. A ``unet`` autoencoder has that very decoder, so a
segmenter built on one starts from its decoder's weights as well.

    x (N, C, H, W) -> encoder stages f_1 (H/2) ... f_L (H/2^L)
    h = f_L;  for i = L-1 .. 1:  h = block_i([up(h, f_i), f_i])
    h = block_0([up(h, x), stem(x)]);  logits = head(h)   (N, K, H, W)

Sizes need not be powers of two (every upsampling goes to the skip's exact size), and the
segmenter may run at another image size than the autoencoder was trained at.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from aevision.errors import AevisionError, ConfigError
from aevision.models.inference import eval_mode
from aevision.models.registry import MODELS
from aevision.models.unet import UNetDecoder
from aevision.tasks.flips import flip_averaged, tta_rule, valid_tta
from aevision.tasks.freezing import Freezable
from aevision.tasks.segmentation.loss import SegLoss


class Segmenter(Freezable):
    """encoder (pretrained or not) + U-Net decoder + 1x1 head; ``forward`` is the training loss.

    ``freeze_epochs`` (:class:`~aevision.tasks.freezing.Freezable`): during the first epochs the
    encoder gets no gradient and stays in eval mode (its batch-norm statistics too), so the new
    decoder learns on fixed pretrained features before fine-tuning can disturb them. With
    ``freeze_decoder`` a pretrained decoder (from a ``unet`` autoencoder) is held the same way, so
    that only the new class head learns at first: a randomly initialised head sends random
    gradients into whatever it sits on (the argument of linear-probe-then-fine-tune, Kumar et al.
    2022).

    ``pretrained_lr_scale``: the weights that came from the autoencoder train at ``lr`` times this,
    the new ones at ``lr`` (the engine's ``param_groups`` hook).

    ``spec["tta"]``: flips (``TTA_FLIPS``) averaged over at prediction (:meth:`scores`); training
    sees the plain logits.
    """

    def __init__(self, encoder: nn.Module, decoder: UNetDecoder, num_classes: int, spec: dict[str, Any],
                 loss: SegLoss | None = None):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.head = nn.Conv2d(decoder.out_channels, num_classes, 1)
        self.num_classes = num_classes
        self.spec = spec  # how to rebuild it: written to config.json
        self.loss_fn = loss or SegLoss(num_classes)
        self.decoder_pretrained = False  # set by whoever loads the decoder's weights
        self.freeze_decoder = False
        self.pretrained_lr_scale = 1.0

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.spec["input_shape"])  # type: ignore[return-value]

    @property
    def classes(self) -> list[str]:
        return list(self.spec["classes"])

    @property
    def tta(self) -> list[str]:
        return list(self.spec.get("tta", []))  # segmenters saved before test-time flips: none

    @tta.setter
    def tta(self, names: Sequence[str]) -> None:
        if not valid_tta(names):
            raise ConfigError("tta", list(names), tta_rule())
        self.spec["tta"] = list(names)  # saved with the segmenter: it predicts as it was scored

    @property
    def palette(self) -> list[tuple[int, int, int]]:
        return [tuple(c) for c in self.spec["palette"]]  # type: ignore[misc]

    # --- inference -----------------------------------------------------------------------------

    def logits(self, x: Tensor) -> Tensor:
        """(N, C, H, W) floats in [0, 1] -> (N, K, H, W) class scores."""
        feats = self.encoder.forward_features(x)
        return self.head(self.decoder(x, feats))

    def scores(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, K, H, W) class probabilities, averaged over the image and its flips
        (``tta``: every combination of them, mapped back before averaging): predictions that do not
        hinge on which way a scene faces. Without ``tta``, the softmax of :meth:`logits`."""
        return flip_averaged(lambda v: self.logits(v).softmax(dim=1), x, self.tta, spatial=True)

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, H, W) class ids (int64), from :meth:`scores`."""
        return self.scores(x).argmax(dim=1)

    # --- training ------------------------------------------------------------------------------

    def forward(self, x: Tensor, masks: Tensor) -> dict[str, Tensor]:
        """Loss terms for images ``x`` (N, C, H, W) and masks (N, H, W) (255 = unknown)."""
        return self.loss_fn(self.logits(x), masks)

    def pretrained_parts(self) -> list[nn.Module]:
        """The parts whose weights came from the autoencoder: the encoder, and a ``unet``'s decoder."""
        return [self.encoder, self.decoder] if self.decoder_pretrained else [self.encoder]

    def frozen_parts(self) -> list[nn.Module]:
        """What ``freeze_epochs`` holds still: the encoder, and with ``freeze_decoder`` the decoder."""
        return self.pretrained_parts() if self.freeze_decoder else [self.encoder]

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """The engine's optimizer hook: pretrained weights at ``lr * pretrained_lr_scale``."""
        if self.pretrained_lr_scale == 1.0:
            return [{"params": list(self.parameters()), "lr": lr}]
        pretrained = self.pretrained_parts()
        new = [m for m in (self.head, self.decoder) if m not in pretrained]
        scaled = lr * self.pretrained_lr_scale
        return [{"params": [p for m in new for p in m.parameters()], "lr": lr},
                {"params": [p for m in pretrained for p in m.parameters()], "lr": scaled}]


def feature_encoder(name: str, input_shape: Sequence[int], options: dict[str, Any]) -> nn.Module:
    """A freshly initialised encoder of architecture ``name``, without its code head."""
    parts = MODELS.build(name, tuple(int(s) for s in input_shape), field="encoder", options=dict(options))
    return strip_head(parts.encoder, name)


def strip_head(encoder: nn.Module, name: str) -> nn.Module:
    if not callable(getattr(encoder, "forward_features", None)):
        raise ConfigError("encoder", name, "a convolutional architecture whose encoder has feature maps "
                          "(forward_features), such as 'conv'")
    if isinstance(getattr(encoder, "head", None), nn.Module):
        encoder.head = nn.Identity()  # the code is not used: only the stage maps are
    return encoder


def stage_channels(encoder: nn.Module, input_shape: Sequence[int]) -> list[int]:
    """Channels of each feature map, found by one forward pass on a blank image."""
    with torch.no_grad(), eval_mode(encoder):
        feats = encoder.forward_features(torch.zeros(1, *input_shape))
    if not isinstance(feats, (list, tuple)) or not feats or any(f.dim() != 4 for f in feats):
        raise AevisionError("encoder: forward_features must return a list of (N, C, H, W) maps")
    return [int(f.shape[1]) for f in feats]


def build_segmenter(encoder: nn.Module, encoder_spec: dict[str, Any], *, input_shape: Sequence[int],
                    classes: list[str], palette: list[tuple[int, int, int]],
                    decoder_channels: list[int] | None = None, stem_channels: int = 16,
                    batch_norm: bool = True, tta: Sequence[str] = ()) -> Segmenter:
    """Wrap ``encoder`` (already initialised: pretrained weights or random) in a U-Net.

    ``encoder_spec``: ``{"name", "options", "input_shape"}`` of the architecture, so that
    :func:`load_segmenter` can rebuild it. ``decoder_channels``: the width of each decoder level,
    finest (full resolution) first; default: the encoder's stage widths. ``tta``: test-time flips
    (names of ``TTA_FLIPS``).
    """
    skips = stage_channels(encoder, encoder_spec["input_shape"])
    widths = list(decoder_channels) if decoder_channels is not None else list(skips)
    if len(widths) != len(skips) or min(widths) < 1:
        raise ConfigError("decoder.channels", decoder_channels,
                          f"{len(skips)} positive widths (one per encoder stage, finest first)")
    decoder = UNetDecoder(int(input_shape[0]), skips, widths, stem_channels, batch_norm)
    spec = {
        "encoder": {"name": encoder_spec["name"], "options": dict(encoder_spec.get("options", {})),
                    "input_shape": list(encoder_spec["input_shape"])},
        "decoder": {"channels": widths, "stem_channels": stem_channels, "batch_norm": batch_norm},
        "input_shape": [int(s) for s in input_shape],
        "classes": list(classes),
        "palette": [list(c) for c in palette],
    }
    seg = Segmenter(encoder, decoder, len(classes), spec)
    seg.tta = tta
    return seg


def segmenter_from_spec(spec: dict[str, Any]) -> Segmenter:
    """An untrained segmenter of the architecture ``spec`` describes (for loading weights into)."""
    enc = spec["encoder"]
    encoder = feature_encoder(enc["name"], enc["input_shape"], enc.get("options", {}))
    dec = spec["decoder"]
    return build_segmenter(encoder, enc, input_shape=spec["input_shape"], classes=spec["classes"],
                           palette=[tuple(c) for c in spec["palette"]], decoder_channels=dec["channels"],
                           stem_channels=dec["stem_channels"], batch_norm=dec["batch_norm"],
                           tta=spec.get("tta", ()))


def encoder_from_autoencoder(model: nn.Module) -> tuple[nn.Module, dict[str, Any]]:
    """A copy of a trained autoencoder's encoder (its weights) and its architecture spec."""
    spec = getattr(model, "spec", None) or {}
    name = spec.get("name", type(model).__name__)
    encoder = strip_head(copy.deepcopy(model.encoder), name)  # type: ignore[arg-type]
    return encoder, {"name": name, "options": dict(spec.get("options", {})),
                     "input_shape": list(model.input_shape)}  # type: ignore[attr-defined]
