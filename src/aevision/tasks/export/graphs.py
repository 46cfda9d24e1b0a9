"""What is exported of a trained model: one :class:`Graph` per file, each a plain ``nn.Module``.

An autoencoder (any registered architecture) gives ``encoder`` ((N, C, H, W) images in [0, 1] ->
(N, D) code, the code transforms of its regularizers included, as ``model.encode``) and
``decoder`` ((N, D) -> the reconstruction). A codec (an autoencoder with an entropy model) gives
its ``analysis`` transform (images -> the spatial code y, (N, M, h, w), before rounding),
``synthesis`` ((N, M, h, w) decoder input -> images) and, with a hyperprior, ``hyper_analysis``
and ``hyper_synthesis``; the entropy coding itself (probability tables, range coder) stays in
aevision. A segmenter (from ``aevision segment``) is one graph, images -> (N, K, H, W) logits.

Each graph says which of its input axes are dynamic (batch always; height and width for fully
convolutional graphs, in multiples of ``size_multiple``) and how to make its inputs from real
images (``feed``): a decoder is fed the PyTorch encoder's codes of the same images.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from aevision.errors import AevisionError
from aevision.models.base import Autoencoder
from aevision.models.inference import entropy_model_input
from aevision.models.resize import at_input_shape
from aevision.regularizers.base import Regularizer
from aevision.regularizers.entropy import EntropyModel
from aevision.regularizers.hyperprior import Hyperprior

Feed = Callable[[Tensor], dict[str, Tensor]]  # (N, C, H, W) float images -> named graph inputs


@dataclass
class Graph:
    """One exported file: ``module`` maps its one input to ``outputs`` (in order)."""

    name: str
    module: nn.Module
    inputs: list[str]  # one name
    outputs: list[str]
    feed: Feed
    dynamic_size: bool = False  # height and width of the image-sized inputs are dynamic
    size_multiple: int = 1  # dynamic sizes must be multiples of this
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)  # declared value ranges
    note: str = ""


class Call(nn.Module):
    """``fn(x)`` as a module holding the model whose weights ``fn`` uses (every graph has one
    input)."""

    def __init__(self, owner: nn.Module, fn: Callable[[Tensor], Tensor | tuple[Tensor, ...]]):
        super().__init__()
        self.owner, self.fn = owner, fn

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, ...]:
        return self.fn(x)


IMAGE_RANGE = (0.0, 1.0)


@torch.no_grad()
def fully_convolutional(model: Autoencoder) -> bool:
    """True when no weight depends on the image size (see :mod:`aevision.models.resize`) and the
    encoder runs on larger images (a ViT's patch embedding may insist on its own size)."""
    c, h, w = model.input_shape
    try:
        at_input_shape(model, (c, h + 8, w + 8))
        model.encode(torch.zeros(2, c, h + 8, w + 8))
    except (AevisionError, RuntimeError, AssertionError, ValueError):
        return False
    return True


def autoencoder_graphs(model: Autoencoder) -> list[Graph]:
    """``encoder`` and ``decoder`` of any architecture; the encoder takes any image size when the
    model is fully convolutional (its code then grows with the image; the decoder stays fixed)."""
    model = model.eval()
    ranges = {"images": IMAGE_RANGE, **({"code": model.code_range} if model.code_range else {})}
    encoder = Graph("encoder", Call(model, model.encode), ["images"], ["code"],
                    lambda x: {"images": x}, dynamic_size=fully_convolutional(model), ranges=ranges)

    def code_of(x: Tensor) -> dict[str, Tensor]:
        return {"code": model.encode(x)}

    why = cannot_decode(model)
    if why:  # a masked autoencoder decodes patch tokens, not its pooled code
        encoder.note = f"no decoder exported: {why}"
        return [encoder]
    decoder = Graph("decoder", Call(model, model.decode), ["code"], ["reconstruction"], code_of)
    return [encoder, decoder]


@torch.no_grad()
def cannot_decode(model: Autoencoder) -> str | None:
    """Why ``model.decode`` takes no code (its one-line error), or None when it does."""
    try:
        model.decode(model.encode(torch.zeros(2, *model.input_shape)))
    except AevisionError as e:
        return str(e)
    return None


def entropy_of(model: Autoencoder) -> EntropyModel | None:
    found = [r for r in model.regularizers if isinstance(r, EntropyModel)]
    return found[0] if len(found) == 1 else None


def spatial_encoder(model: Autoencoder) -> nn.Module | None:
    """The encoder without its final flatten ((N, C, H, W) -> (N, M, h, w) at any size), or None
    when the encoder does not end in one or an earlier regularizer transforms the code."""
    before = model.regularizers[:[isinstance(r, EntropyModel) for r in model.regularizers].index(True)]
    if any(type(r).transform_code is not Regularizer.transform_code for r in before):
        return None
    enc = model.encoder
    if isinstance(enc, nn.Sequential) and isinstance(enc[-1], nn.Flatten):
        return enc[:-1]
    has_maps = callable(getattr(enc, "forward_features", None))
    if isinstance(getattr(enc, "head", None), nn.Flatten) and has_maps:
        return Call(enc, lambda x: enc.forward_features(x)[-1])
    return None


def spatial_decoder(model: Autoencoder) -> nn.Module | None:
    """The decoder without its first unflatten ((N, M, h, w) -> images), or None."""
    dec = model.decoder
    if isinstance(dec, nn.Sequential) and isinstance(dec[0], nn.Unflatten):
        return dec[1:]
    return None


def halving_multiple(model: Autoencoder) -> int | None:
    """2^stages when every stage of the model exactly halves its size (so transposed convolutions
    have the same output padding at every size that is a multiple of it), else None."""
    sizes = model.notes.get("stage_sizes")
    if not sizes:
        return None
    exact = all(a == 2 * b and c == 2 * d for (a, c), (b, d) in itertools.pairwise(sizes))
    return 2 ** (len(sizes) - 1) if exact else None


def sized(model: Autoencoder, x: Tensor) -> Autoencoder:
    """``model`` at the size of images ``x`` (the same weights; itself at its own size)."""
    return at_input_shape(model, (model.input_shape[0], *x.shape[-2:])).eval()


def latent(model: Autoencoder, x: Tensor) -> Tensor:
    """The code y the entropy model quantizes, (N, M, h, w), as the codec computes it."""
    return entropy_model_input(sized(model, x), x)


def codec_graphs(model: Autoencoder, entropy: EntropyModel) -> list[Graph]:
    """``analysis`` and ``synthesis`` (+ the hyperprior's two networks) of a codec."""
    model = model.eval()
    spatial_enc, spatial_dec = spatial_encoder(model), spatial_decoder(model)
    multiple = halving_multiple(model)
    fixed_analysis = Call(model, lambda x: latent(model, x))
    analysis = Graph("analysis", spatial_enc or fixed_analysis, ["images"], ["latent"],
                     lambda x: {"images": x}, dynamic_size=spatial_enc is not None,
                     ranges={"images": IMAGE_RANGE},
                     note="round(latent) are the integers the entropy model codes (minus the "
                          "hyperprior's predicted mean, with means=true)")
    dynamic_dec = spatial_dec is not None and multiple is not None

    def decoder_input(x: Tensor) -> dict[str, Tensor]:
        m = sized(model, x)
        return {"latent_hat": entropy_of(m).spatial(m.encode(x))}  # type: ignore[union-attr]

    synthesis = Graph("synthesis", spatial_dec if dynamic_dec else
                      Call(model, lambda y: model.decode(y.flatten(1))), ["latent_hat"], ["images"],
                      decoder_input, dynamic_size=dynamic_dec, size_multiple=multiple or 1,
                      note="latent_hat: the decoded integers (plus the hyperprior's mean, with means=true)")
    graphs = [analysis, synthesis]
    if isinstance(entropy, Hyperprior):
        graphs += hyperprior_graphs(model, entropy, analysis.dynamic_size)
    return graphs


def hyperprior_graphs(model: Autoencoder, entropy: Hyperprior, dynamic: bool) -> list[Graph]:
    """h_a (the side information, before rounding) and h_s (the Gaussian of every latent)."""
    name = "latent" if entropy.means else "latent_abs"

    def hyper_input(x: Tensor) -> Tensor:
        y = latent(model, x)
        return y if entropy.means else torch.round(y).abs()

    def gaussian(z_hat: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        scale, mean = entropy.gaussian(z_hat, (4 * z_hat.shape[-2], 4 * z_hat.shape[-1]))
        return (scale, mean) if entropy.means else scale

    h_a = Graph("hyper_analysis", Call(entropy, entropy.h_a), [name], ["hyper_latent"],
                lambda x: {name: hyper_input(x)}, dynamic_size=dynamic,
                note="round(hyper_latent) is the side information, coded first")
    h_s = Graph("hyper_synthesis", Call(entropy, gaussian), ["hyper_latent_hat"],
                ["scale", "mean"] if entropy.means else ["scale"],
                lambda x: {"hyper_latent_hat": torch.round(entropy.h_a(hyper_input(x)))},
                dynamic_size=dynamic,
                note="outputs are 4x the hyper latent's size: crop them to the latent's (h, w); "
                     "aevision evaluates this network in float64 to pick each latent's scale table")
    return [h_a, h_s]


def segmenter_graphs(seg: nn.Module) -> list[Graph]:
    """The whole segmentation network: images -> per-pixel class scores, at any size."""
    seg = seg.eval()
    flips = list(getattr(seg, "tta", []))
    note = "argmax over axis 1 gives the class of every pixel"
    if flips:  # the graph is one pass: the flips aevision averages over are the caller's to apply
        note += (f"; aevision scores this segmenter with test-time flips {flips}: it averages the softmax "
                 "of the logits of the image and of each flipped copy (flipped back), every combination")
    return [Graph("segmenter", Call(seg, seg.logits), ["images"], ["logits"], lambda x: {"images": x},
                  dynamic_size=True, ranges={"images": IMAGE_RANGE}, note=note)]


def model_graphs(model: nn.Module) -> list[Graph]:
    """The graphs of a loaded autoencoder, codec or segmenter."""
    if not isinstance(model, Autoencoder):
        return segmenter_graphs(model)
    entropy = entropy_of(model)
    return codec_graphs(model, entropy) if entropy is not None else autoencoder_graphs(model)
