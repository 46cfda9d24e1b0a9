"""An autoencoder with an entropy model, used as an image codec: images <-> one compact file.

    codec = Codec(aevision.load("runs/codec"))
    data = codec.compress([img1, img2])          # (C, H, W) uint8 tensors of any sizes
    images = codec.decompress(data)              # the reconstructions, same sizes
    codec.bits_per_pixel(data)                   # every byte of the file, header included

Per image: the analysis transform (rebuilt for the image's size, same weights) gives the code,
the entropy model rounds it and hands integer symbols with their probability tables to the range
coder; all images share one range-coded payload behind the header of
:mod:`aevision.coding.container`. Decoding checks the file checksum, the model hash, and, before
any image is synthesized, the checksum of the decoded latents: a corrupted file, a file from
another model or a decoder that disagrees with the encoder is an error, never a wrong picture.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from aevision.coding.container import HASH_BYTES, Header, names_problem, pack, parse
from aevision.coding.rangecoder import SymbolReader, SymbolWriter
from aevision.data.images import read_image, to_hwc
from aevision.data.imageset import to_float, to_uint8
from aevision.errors import AevisionError
from aevision.io import refuse_existing, staged_folder, write_bytes
from aevision.models.base import Autoencoder
from aevision.models.inference import entropy_model_input
from aevision.models.io import load_model
from aevision.models.resize import at_input_shape
from aevision.regularizers.entropy import EntropyModel


def model_hash(model: Autoencoder) -> bytes:
    """SHA-256 of the architecture spec (without the image size) and every weight, cut to 4 bytes.

    A codec's weights and its entropy model define the bitstream, so two models share a hash only
    if they decode each other's files identically.
    """
    spec = {k: v for k, v in model.spec.items() if k != "input_shape"}
    h = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode())
    for key, value in sorted(model.state_dict().items()):
        t = value.detach().cpu().contiguous()
        h.update(f"{key}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.digest()[:HASH_BYTES]


def entropy_model(model: Autoencoder) -> EntropyModel:
    found = [r for r in model.regularizers if isinstance(r, EntropyModel)]
    if len(found) != 1:
        raise AevisionError(
            "this model has no entropy model, so it can neither compress nor decompress: train one with "
            "--reg factorized or --reg hyperprior (e.g. --model codec --reg hyperprior:weight=0.01)"
            if not found else "this model has more than one entropy model"
        )
    return found[0]


def _latent_crc(q: Tensor, crc: int) -> int:
    return zlib.crc32(q.to(torch.int64).numpy().astype("<i8").tobytes(), crc)


@dataclass
class Compressed:
    """A compressed file and the integer latents it holds (for checks and tests)."""

    data: bytes
    latents: list[Tensor]  # (M, h, w) per image, integer-valued floats
    header_bytes: int

    @property
    def bits_per_pixel(self) -> float:
        return bits_per_pixel(self.data)


def bits_per_pixel(data: bytes) -> float:
    """File size in bits (header and all) over the pixels of the images it holds."""
    header, _ = parse(data)
    return 8.0 * len(data) / header.pixels


class Codec:
    """Compress and decompress images with a trained autoencoder that has an entropy model."""

    def __init__(self, model: Autoencoder):
        self.model = model.eval()
        self.entropy = entropy_model(model)
        self.channels = model.input_shape[0]
        self.hash = model_hash(model)
        self._sized: dict[tuple[int, int], Autoencoder] = {model.input_shape[1:]: model}

    def at_size(self, height: int, width: int) -> Autoencoder:
        """The model rebuilt for (height, width) images, cached."""
        key = (height, width)
        if key not in self._sized:
            self._sized[key] = at_input_shape(self.model, (self.channels, height, width)).eval()
        return self._sized[key]

    @staticmethod
    def _entropy(model: Autoencoder) -> EntropyModel:
        return entropy_model(model)

    def analysis(self, model: Autoencoder, x: Tensor) -> Tensor:
        """The code the entropy model quantizes (an exported codec's parity check overrides this
        with the exported graph)."""
        return entropy_model_input(model, x)

    @torch.no_grad()
    def compress_latents(self, images: Sequence[Tensor], names: Sequence[str] | None = None) -> Compressed:
        """Images ((C, H, W) uint8, any sizes) -> the file bytes and the latents they encode;
        ``names`` (plain file names, one per image) are kept in the file for decompressing."""
        if not len(images):
            raise AevisionError("nothing to compress: no images given")
        check_names(names, len(images))
        writer = SymbolWriter()
        device = next(self.model.parameters()).device
        sizes, latents, crc = [], [], 0
        for i, img in enumerate(images):
            if img.dtype != torch.uint8 or img.dim() != 3 or img.shape[0] != self.channels:
                raise AevisionError(f"image {i}: expected a ({self.channels}, H, W) uint8 tensor, "
                                    f"got {tuple(img.shape)} {img.dtype}")
            h, w = int(img.shape[1]), int(img.shape[2])
            model = self.at_size(h, w)
            y = self.analysis(model, to_float(img.unsqueeze(0)).to(device))
            q, _ = self._entropy(model).encode_latents(y, writer)
            crc = _latent_crc(q, crc)
            sizes.append((h, w))
            latents.append(q[0])
        payload = writer.getvalue()
        data = pack(Header(self.hash, tuple(sizes), crc, None if names is None else tuple(names)), payload)
        return Compressed(data, latents, len(data) - len(payload))

    def compress(self, images: Sequence[Tensor], names: Sequence[str] | None = None) -> bytes:
        return self.compress_latents(images, names).data

    @torch.no_grad()
    def decompress_latents(self, data: bytes, source: str = "compressed file") -> tuple[Header, list[Tensor]]:
        """File bytes -> (header, integer latents per image), every check passed."""
        header, symbols, _ = self._decode(data, source)
        return header, symbols

    def _decode(self, data: bytes, source: str) -> tuple[Header, list[Tensor], list[Tensor]]:
        """(header, integer symbols, the synthesis inputs) per image: the inputs are the symbols
        plus the entropy model's predicted means, if it predicts any."""
        header, payload = parse(data, source)
        if header.model_hash != self.hash:
            raise AevisionError(
                f"{source}: compressed with another model (model hash {header.model_hash.hex()}, "
                f"this model's is {self.hash.hex()})"
            )
        reader = SymbolReader(payload)
        latents, values, crc = [], [], 0
        try:
            for h, w in header.sizes:
                q, y_hat = self._entropy(self.at_size(h, w)).decode_latents(reader)
                crc = _latent_crc(q, crc)
                latents.append(q[0])
                values.append(y_hat[0])
        except (ValueError, RuntimeError, OverflowError, AssertionError) as e:
            # constriction reports data that no encoder could have produced with an AssertionError
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise AevisionError(f"{source}: corrupted payload ({first})") from None
        if crc != header.latent_crc:
            raise AevisionError(
                f"{source}: decoded latents fail their checksum (the entropy model evaluated "
                "differently from the encoder's; the file cannot be decoded faithfully here)"
            )
        return header, latents, values

    @torch.no_grad()
    def decompress(self, data: bytes, source: str = "compressed file") -> list[Tensor]:
        """File bytes -> the reconstructed images, (C, H, W) uint8 each."""
        return self.decompress_with_header(data, source)[1]

    @torch.no_grad()
    def decompress_with_header(self, data: bytes, source: str = "compressed file"
                               ) -> tuple[Header, list[Tensor]]:
        """File bytes -> (its header: sizes and, if recorded, image names; the images)."""
        header, _, latents = self._decode(data, source)
        device = next(self.model.parameters()).device
        out = []
        for (h, w), q in zip(header.sizes, latents, strict=True):
            model = self.at_size(h, w)
            x_hat = model.decode(q.unsqueeze(0).flatten(1).to(device))
            out.append(to_uint8(x_hat[0].cpu()))
        return header, out


def check_names(names: Sequence[str] | None, n: int) -> None:
    """``names``: None, or one plain file name per image."""
    why = None if names is None else names_problem(names, n)
    if why:
        raise AevisionError(why)


@dataclass
class CompressedFile:
    """What :func:`compress_files` wrote: the file, its size, its header's size and the pixels."""

    path: Path
    images: int
    size: int
    header_bytes: int
    pixels: int

    @property
    def bits_per_pixel(self) -> float:
        return 8 * self.size / self.pixels


def compress_files(codec: Codec, paths: Sequence[Path], out: str | os.PathLike[str]) -> CompressedFile:
    """Compress the image files ``paths`` into the one file ``out``, which keeps their names."""
    images = [read_image(path, codec.channels) for path in paths]
    # a name that is not valid text (bytes from another encoding) keeps its readable part; a
    # backslash (legal on POSIX) becomes '_', so no system reads a folder into the decoded name
    names = [Path(path).name.encode("utf-8", "replace").decode("utf-8").replace("\\", "_") for path in paths]
    result = codec.compress_latents(images, names)
    write_bytes(out, result.data)
    pixels = sum(int(i.shape[1]) * int(i.shape[2]) for i in images)
    return CompressedFile(Path(out), len(images), len(result.data), result.header_bytes, pixels)


def decompress_file(model_path: str | os.PathLike[str], path: str | os.PathLike[str],
                    out: str | os.PathLike[str], device: str = "cpu", *,
                    overwrite: bool = False) -> list[Path]:
    """Decode the compressed file ``path`` with the codec model that made it into
    ``out/<name>.png``, the names of the files that were compressed (a file written before
    aevision kept them: ``out/<file stem>-<n>.png``); returns the PNGs. All are written or none;
    existing files (the originals, when ``out`` is their folder) are replaced only with ``overwrite``."""
    from aevision.report.plots import save_image

    path, out = Path(path), Path(out)
    if not path.is_file():
        what = "a folder, not a compressed file" if path.is_dir() else "no such file"
        raise AevisionError(f"{path}: {what}")
    codec = Codec(load_model(model_path, device))
    header, images = codec.decompress_with_header(path.read_bytes(), source=str(path))
    if out.exists() and not out.is_dir():
        raise AevisionError(f"-o {out}: exists and is not a folder")
    names = png_names(header.names, path.stem, len(images))
    refuse_existing([out / name for name in names], out, overwrite=overwrite)
    with staged_folder(out) as stage:
        for name, img in zip(names, images, strict=True):
            save_image(stage / name, to_hwc(img))
    return [out / name for name in names]


def png_names(names: Sequence[str] | None, stem: str, n: int) -> list[str]:
    """The PNG file of each decoded image: its name's stem + ``.png`` (``-2``, ``-3``, ... after
    a stem already taken: ``a.png`` and ``a.jpg`` both compressed), or ``<stem>-<n>.png``."""
    if names is None:
        width = max(3, len(str(n - 1)))
        return [f"{stem}-{i:0{width}d}.png" for i in range(n)]
    taken: set[str] = set()
    out = []
    for name in names:
        base = Path(name).stem or name
        candidate, k = f"{base}.png", 1
        while candidate.lower() in taken:
            k += 1
            candidate = f"{base}-{k}.png"
        taken.add(candidate.lower())
        out.append(candidate)
    return out


def roundtrip(codec: Codec, images: Sequence[Tensor]) -> tuple[list[Tensor], list[float]]:
    """Compress each image into its own file and decode it: (reconstructions, bpp per image)."""
    recons, bpps = [], []
    for img in images:
        data = codec.compress([img])
        recons.append(codec.decompress(data)[0])
        bpps.append(8.0 * len(data) / (img.shape[1] * img.shape[2]))
    return recons, bpps
