"""``mae``: the masked autoencoder (He et al. 2022), a ViT that learns by filling in hidden patches.

Training: the image is cut into L patches of ``patch_size``; a random ``mask_ratio`` of them (a
per-sample permutation: ``argsort`` of uniform noise, so the global seed decides it) is hidden,
and the ViT encoder sees only the kept ones. A light decoder gets the encoder's tokens back in
their places, a shared mask token in the hidden ones (every token with its fixed 2D sin-cos
position), and predicts every patch's pixels; the loss is the error on the hidden patches only,
optionally against each patch normalised to zero mean and unit variance (``norm_pix_loss``).

Features: ``encode(x)`` runs the encoder over all patches (no mask) and pools its tokens: their
mean, or the class token (``pool: cls``). So the encoder is a backbone like any other for the
probe, kNN and fine-tuning. Its blocks play the part a conv encoder's stages play for features
(:meth:`ViTEncoder.block_maps`: each block's patch tokens laid out on the patch grid, so
``features: {source: stages, pool: 2}`` keeps where in the image a token fired, which a mean over
all tokens loses), and they are numbered for layer-wise learning-rate decay
(:meth:`ViTEncoder.layer_of`).

The transformer is timm's (``Block``, ``PatchEmbed``, ``build_sincos2d_pos_embed``); what is
specific here is the masking and the objective, :class:`MaskedAutoencoder`, the Autoencoder
subclass the builder names in ``Parts.autoencoder``.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Literal

import torch
from timm.layers import PatchEmbed, build_sincos2d_pos_embed
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from aevision.errors import AevisionError, ConfigError
from aevision.models.base import Autoencoder, Parts
from aevision.models.registry import MODELS
from aevision.regularizers.base import LossContext, encode_with_tangent
from aevision.validation import check

Pool = Literal["mean", "cls"]


def patchify(x: Tensor, p: int) -> Tensor:
    """(N, C, H, W) -> (N, L, p*p*C), patches in row-major order, each (p, p, C) flattened."""
    n, c, h, w = x.shape
    x = x.reshape(n, c, h // p, p, w // p, p)
    return torch.einsum("nchpwq->nhwpqc", x).reshape(n, (h // p) * (w // p), p * p * c)


def unpatchify(patches: Tensor, p: int, shape: tuple[int, int, int]) -> Tensor:
    """(N, L, p*p*C) -> (N, C, H, W): the inverse of :func:`patchify`."""
    c, h, w = shape
    x = patches.reshape(patches.shape[0], h // p, w // p, p, p, c)
    return torch.einsum("nhwpqc->nchpwq", x).reshape(patches.shape[0], c, h, w)


def random_masking(n: int, length: int, keep: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Per-sample random split of ``length`` patches: ``kept`` (N, keep) patch indices the encoder
    sees, and ``restore`` (N, L), the permutation that puts [kept, masked] back in patch order."""
    shuffle = torch.rand(n, length, device=device).argsort(dim=1)
    return shuffle[:, :keep], shuffle.argsort(dim=1)


def mask_of(kept: Tensor, length: int) -> Tensor:
    """(N, L) float, 1 on the patches ``kept`` leaves out (the ones the loss covers)."""
    mask = torch.ones(kept.shape[0], length, device=kept.device)
    return mask.scatter(1, kept, 0.0)


def sincos_positions(grid: tuple[int, int], width: int) -> Tensor:
    """(1, h*w, width) fixed 2D sin-cos position embedding (row-major, as :func:`patchify`)."""
    return build_sincos2d_pos_embed(list(grid), width).unsqueeze(0)


def init_weights(module: nn.Module) -> None:
    """The paper's initialisation: Xavier-uniform linear layers (the patch projection as one, over
    its flattened kernel), zero biases, unit layer norms."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, PatchEmbed):
            nn.init.xavier_uniform_(m.proj.weight.view(m.proj.weight.shape[0], -1))


def blocks(width: int, depth: int, heads: int, mlp_ratio: float) -> nn.ModuleList:
    return nn.ModuleList([Block(width, heads, mlp_ratio, qkv_bias=True) for _ in range(depth)])


# how a ViT's blocks attend (the ``attention`` attribute of ViTEncoder and MAEDecoder): torch's fused
# kernel; the formula, softmax(q k^T / sqrt(d)) v, which forward-mode AD and double backward can
# differentiate (contractive penalties); or ``auto``, whichever is faster where it runs (fused_pays)
Attention = Literal["auto", "fused", "formula"]


def fused_pays(x: Tensor) -> bool:
    """Whether torch's fused attention kernel is the faster way to attend over ``x`` here.

    Not in bfloat16 on the CPU: there the formula, softmax(q k^T / sqrt(d)) v as two batched
    matmuls, ran the cifar10 preset's MAE pretraining step 1.74x faster (batch 256, 16 kept
    tokens) and its ViT's fine-tuning step 1.33x (batch 128, 64 tokens), one thread on this
    project's 2-core CPU, the same first loss to 4 digits (bench/results/attention.json): the CPU
    kernel's backward is slow at these sizes. In fp32 the two were even (1.03x, 0.99x).
    """
    bf16 = x.dtype == torch.bfloat16 or (torch.is_autocast_enabled("cpu")
                                         and torch.get_autocast_dtype("cpu") == torch.bfloat16)
    return not (x.device.type == "cpu" and bf16)


def attend_with(layers: nn.ModuleList, attention: Attention, x: Tensor) -> None:
    """Set each timm block of ``layers`` to attend by the kernel or by the formula: as
    ``attention`` says, or with ``auto`` by what is faster for ``x`` (:func:`fused_pays`)."""
    fused = attention == "fused" or (attention == "auto" and fused_pays(x))
    for block in layers:
        block.attn.fused_attn = fused


class ViTEncoder(nn.Module):
    """(N, C, H, W) -> (N, D) pooled tokens; :meth:`forward_visible` runs on kept patches only."""

    def __init__(self, input_shape: tuple[int, int, int], patch_size: int, width: int, depth: int,
                 heads: int, mlp_ratio: float, pool: Pool):
        super().__init__()
        c, h, w = input_shape
        self.grid = (h // patch_size, w // patch_size)
        self.patch_embed = PatchEmbed((h, w), patch_size, c, width)
        self.register_buffer("pos_embed", sincos_positions(self.grid, width), persistent=False)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width)) if pool == "cls" else None
        self.blocks = blocks(width, depth, heads, mlp_ratio)
        self.norm = nn.LayerNorm(width)
        self.pool = pool
        self.attention: Attention = "auto"
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=0.02)

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    def with_cls(self, tokens: Tensor) -> Tensor:
        """(N, K, D) positioned patch tokens -> (N, [1 +] K, D), the class token first if any."""
        if self.cls_token is None:
            return tokens
        return torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)

    def transformer(self, tokens: Tensor) -> Tensor:
        """(N, K, D) positioned patch tokens -> (N, [1 +] K, D), the class token first if any."""
        tokens = self.with_cls(tokens)
        attend_with(self.blocks, self.attention, tokens)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)

    def embed(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, L, D) every patch's token, with its position."""
        tokens = self.patch_embed(x)
        return tokens + self.pos_embed.to(tokens.dtype)

    def pooled(self, tokens: Tensor) -> Tensor:
        """(N, [1 +] K, D) encoder output -> (N, D): the class token, or the patch tokens' mean."""
        return tokens[:, 0] if self.cls_token is not None else tokens.mean(dim=1)

    def forward_visible(self, x: Tensor, kept: Tensor | None = None) -> Tensor:
        """(N, C, H, W) and (N, K) kept patch indices (None: all) -> (N, [1 +] K, D) tokens."""
        tokens = self.embed(x)
        if kept is not None:
            tokens = tokens.gather(1, kept.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
        return self.transformer(tokens)

    def forward(self, x: Tensor) -> Tensor:
        return self.pooled(self.forward_visible(x))

    def block_maps(self, x: Tensor) -> list[Tensor]:
        """(N, C, H, W) -> one (N, D, h, w) map a block: its patch tokens (all patches, no mask, the
        class token left out) on the (h, w) patch grid, first block first; the last map is the
        encoder's output (after the final norm), so its mean over the grid is ``forward``'s
        mean-pooled code."""
        tokens = self.with_cls(self.embed(x))
        skip = 0 if self.cls_token is None else 1
        attend_with(self.blocks, self.attention, tokens)
        maps = []
        for i, block in enumerate(self.blocks):
            tokens = block(tokens)
            out = self.norm(tokens) if i == len(self.blocks) - 1 else tokens
            maps.append(out[:, skip:].transpose(1, 2).reshape(out.shape[0], -1, *self.grid))
        return maps

    @property
    def num_layers(self) -> int:
        """Layers for layer-wise lr decay: 0 = patch embedding (and class token), 1..depth = the
        blocks, depth + 1 = the final norm and whatever sits on top (a classifier's head)."""
        return len(self.blocks) + 1

    def layer_of(self, name: str) -> int:
        """The layer (see :attr:`num_layers`) of the parameter called ``name`` in this module."""
        if name.startswith(("patch_embed.", "cls_token")):
            return 0
        if name.startswith("blocks."):
            return int(name.split(".")[1]) + 1
        return self.num_layers


class MAEDecoder(nn.Module):
    """Encoder tokens (N, [1 +] K, D) + ``restore`` (N, L) -> (N, L, p*p*C) patch predictions."""

    def __init__(self, grid: tuple[int, int], width: int, out_width: int, depth: int, heads: int,
                 mlp_ratio: float, patch_dim: int, has_cls: bool):
        super().__init__()
        self.embed = nn.Linear(width, out_width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, out_width))
        self.register_buffer("pos_embed", sincos_positions(grid, out_width), persistent=False)
        self.blocks = blocks(out_width, depth, heads, mlp_ratio)
        self.norm = nn.LayerNorm(out_width)
        self.pred = nn.Linear(out_width, patch_dim)
        self.has_cls = has_cls
        self.attention: Attention = "auto"
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, tokens: Tensor, restore: Tensor) -> Tensor:
        x = self.embed(tokens)
        cls, x = (x[:, :1], x[:, 1:]) if self.has_cls else (None, x)
        n, length = restore.shape
        masks = self.mask_token.to(x.dtype).expand(n, length - x.shape[1], -1)
        x = torch.cat([x, masks], dim=1)  # [kept, masked] -> patch order
        x = x.gather(1, restore.unsqueeze(-1).expand(-1, -1, x.shape[-1])) + self.pos_embed.to(x.dtype)
        if cls is not None:
            x = torch.cat([cls, x], dim=1)
        attend_with(self.blocks, self.attention, x)
        for block in self.blocks:
            x = block(x)
        out = self.pred(self.norm(x))
        return out[:, 1:] if cls is not None else out


class MaskedAutoencoder(Autoencoder):
    """The MAE objective in the Autoencoder's forward: regularizers, corruption, clips and the
    loss dict work as for every architecture; ``z`` (what code penalties see) is the pooled code
    of the kept patches, the reconstruction term is the error on the masked patches."""

    encoder: ViTEncoder
    decoder: MAEDecoder

    def __init__(self, parts: Parts, input_shape: Any, regularizers: Any = (),
                 reconstruction: str = "mse", spec: dict[str, Any] | None = None):
        if reconstruction not in ("mse", "l1"):
            raise ConfigError("model.reconstruction", reconstruction,
                              "'mse' or 'l1' for mae (its targets are not probabilities)")
        super().__init__(parts, input_shape, regularizers, reconstruction, spec)  # type: ignore[arg-type]
        self.patch_size = int(parts.notes["patch_size"])
        self.keep = int(parts.notes["kept_patches"])
        self.norm_pix_loss = bool(parts.notes["norm_pix_loss"])
        if any(reg.jacobian for reg in self.regularizers):
            self.encoder.attention = "formula"

    def encode_visible(self, x: Tensor, kept: Tensor) -> tuple[Tensor, tuple[Any, Tensor]]:
        """The pooled code of the ``kept`` patches (after code transforms) and, beside it, the
        regularizers' aux and the encoder's tokens (N, [1 +] K, D) for the decoder."""
        tokens = self.encoder.forward_visible(x, kept)
        z, aux = self.encoder.pooled(tokens), []
        for reg in self.regularizers:
            z, a = reg.transform_code_with_aux(z)
            aux.append(a)
        return z, (tuple(aux), tokens)

    def patch_targets(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, L, p*p*C) what the decoder predicts: pixels, or normalised patches."""
        target = patchify(x, self.patch_size)
        if self.norm_pix_loss:
            mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1e-6).sqrt()
        return target

    def objective(self, x: Tensor, x_in: Tensor, tangent: Tensor | None,
                  frames: int | None) -> tuple[LossContext, Tensor]:
        """Mask, encode the kept patches, decode every patch, error on the masked ones only:
        ``sum(mask * err) / sum(mask)`` with ``err`` the per-patch mean (squared) error."""
        kept, restore = random_masking(x.shape[0], self.encoder.num_patches, self.keep, x.device)
        encode = partial(self.encode_visible, kept=kept)
        jvp = None
        if tangent is None:
            z, (aux, tokens) = encode(x_in)
        else:
            z, (aux, tokens), jvp = encode_with_tangent(encode, x_in, tangent)
        pred = self.decoder(tokens, restore)
        target = self.patch_targets(x)
        err = pred.float() - target.float()
        err = (err.pow(2) if self.reconstruction == "mse" else err.abs()).mean(dim=-1)
        mask = mask_of(kept, restore.shape[1])
        recon = (err * mask).sum() / mask.sum()
        shape = self.input_shape
        ctx = LossContext(self, x, x_in, z, unpatchify(pred, self.patch_size, shape),  # type: ignore[arg-type]
                          unpatchify(target, self.patch_size, shape), frames, tangent, jvp, aux)
        return ctx, recon

    def decode(self, z: Tensor) -> Tensor:
        raise AevisionError("mae decodes patch tokens, not a pooled code: it cannot decode codes "
                            "(sample, interpolate, latent mixes); reconstruct(x) works")

    def reconstruct(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> the paper's picture: the kept patches as they are, the masked ones
        predicted (a fresh random mask of ``mask_ratio``; normalised predictions are mapped back
        with each patch's own mean and variance)."""
        p, length = self.patch_size, self.encoder.num_patches
        kept, restore = random_masking(x.shape[0], length, self.keep, x.device)
        pred = self.decoder(self.encoder.forward_visible(x, kept), restore).float()
        patches = patchify(x.float(), p)
        if self.norm_pix_loss:
            mean, var = patches.mean(dim=-1, keepdim=True), patches.var(dim=-1, keepdim=True)
            pred = pred * (var + 1e-6).sqrt() + mean
        mask = mask_of(kept, length).unsqueeze(-1)
        return unpatchify(mask * pred + (1 - mask) * patches, p, self.input_shape).to(x.dtype)


def kept_patches(length: int, mask_ratio: float) -> int:
    """How many of ``length`` patches the encoder sees: ``int(L * (1 - ratio))``, as the paper's
    code; at least one must be kept and one masked."""
    check(0 < mask_ratio < 1, "model.mask_ratio", mask_ratio, "a fraction in (0, 1)")
    keep = int(length * (1 - mask_ratio))
    check(1 <= keep < length, "model.mask_ratio", mask_ratio,
          f"a ratio that keeps at least 1 and masks at least 1 of the {length} patches")
    return keep


@MODELS.register("mae", "masked autoencoder (He et al. 2022): ViT encoder on the kept patches, "
                 "light decoder, loss on the masked ones; code = pooled tokens",
                 traits=("numbered_layers",))
def mae(
    input_shape: tuple[int, int, int],
    *,
    patch_size: int = 4,
    width: int = 192,
    depth: int = 6,
    heads: int = 3,
    decoder_width: int = 128,
    decoder_depth: int = 2,
    decoder_heads: int = 4,
    mlp_ratio: float = 4.0,
    mask_ratio: float = 0.75,
    pool: Pool = "mean",
    norm_pix_loss: bool = False,
) -> Parts:
    """Defaults: a ViT-Tiny-wide encoder of 6 blocks over 4x4 patches, sized for 32x32 images."""
    c, h, w = input_shape
    check(patch_size >= 1 and h % patch_size == 0 and w % patch_size == 0, "model.patch_size",
          patch_size, f"a positive divisor of the image height {h} and width {w}")
    for name, value in (("depth", depth), ("decoder_depth", decoder_depth)):
        check(value >= 1, f"model.{name}", value, "an integer >= 1")
    for name, dim, n in (("heads", width, heads), ("decoder_heads", decoder_width, decoder_heads)):
        check(n >= 1 and dim % n == 0, f"model.{name}", n,
              f"a positive divisor of the width {dim} (each head gets width / heads)")
    for name, dim in (("width", width), ("decoder_width", decoder_width)):
        check(dim >= 4 and dim % 4 == 0, f"model.{name}", dim,
              "a multiple of 4 (the 2D sin-cos positions split it four ways)")
    check(mlp_ratio > 0, "model.mlp_ratio", mlp_ratio, "a number > 0")
    encoder = ViTEncoder(input_shape, patch_size, width, depth, heads, mlp_ratio, pool)
    keep = kept_patches(encoder.num_patches, mask_ratio)
    decoder = MAEDecoder(encoder.grid, width, decoder_width, decoder_depth, decoder_heads, mlp_ratio,
                         patch_size * patch_size * c, pool == "cls")
    init_weights(encoder)
    init_weights(decoder)
    return Parts(encoder, decoder, width, autoencoder=MaskedAutoencoder,
                 notes={"patch_size": patch_size, "kept_patches": keep, "norm_pix_loss": norm_pix_loss,
                        "grid": encoder.grid, "code_activation": "linear",
                        "forward_ad": False})  # softmax: see regularizers/contractive.py
