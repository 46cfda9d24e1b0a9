"""The compressed-file format: a compact, self-describing header, then the range-coded payload.

    offset  size     field
    0       3        magic b"AEV"
    3       1        format version: 1, or 2 when the file names its images
    4       4        model hash: first 4 bytes of the SHA-256 of the codec's weights and spec
    8       varint   number of images n
            2n x varint   height, width of each image
            (version 2) varint L, then L bytes: the n image names, UTF-8, separated by NUL bytes
            varint   payload length in bytes
            4        CRC-32 of the decoded latents (checked after decoding)
            4        CRC-32 of everything above and the payload (checked before decoding)
            ...      payload

Varints are unsigned LEB128 (one byte below 128). One 28x28 image costs 20 header bytes. Every
byte of the file counts in the bit rate aevision reports. Image names (the file names that were
compressed, so that decompressing gives them back) are plain names, never paths: no ``/``, ``\\``
or NUL, not ``.`` or ``..``, at most 255 bytes each; a file without them is written as version 1,
byte for byte what earlier versions wrote.

:func:`parse` is pure and defensive: any byte string either yields a header and payload whose
checksum matches, or raises :class:`AevisionError` with one line (not an aevision file, newer
version, truncated, trailing bytes, implausible sizes, checksum mismatch). The latent checksum
catches what the file checksum cannot: a payload decoded with an entropy model that evaluates
differently (another model with a colliding hash, another machine's arithmetic).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from aevision.errors import AevisionError

MAGIC = b"AEV"
VERSION = 2  # the newest format this reads and writes (1: no image names)
HASH_BYTES = 4
MAX_IMAGES = 1 << 20
MAX_SIDE = 1 << 16  # height and width are at most 65536
MAX_PIXELS = 1 << 28  # per image; refuses headers that would allocate absurd tensors
MAX_NAME_BYTES = 255  # an image name's UTF-8 length (a file name on common file systems)
_MAX_VARINT_BYTES = 5


@dataclass(frozen=True)
class Header:
    """What a file says about itself; ``sizes`` are (height, width) per image."""

    model_hash: bytes
    sizes: tuple[tuple[int, int], ...]
    latent_crc: int
    names: tuple[str, ...] | None = None  # each image's name (the file it was), or not recorded

    @property
    def pixels(self) -> int:
        return sum(h * w for h, w in self.sizes)

    @property
    def version(self) -> int:
        return 1 if self.names is None else 2


def names_problem(names: Sequence[str], n: int) -> str | None:
    """Why ``names`` cannot name ``n`` images (each must be a plain file name), or None."""
    if len(names) != n:
        return f"{len(names)} image names for {n} images"
    for i, name in enumerate(names):
        if not isinstance(name, str) or name in ("", ".", ".."):
            return f"the name of image {i} is {name!r}"
        if any(c in name for c in "/\\\0"):
            return f"the name of image {i} ({name!r}) is not a plain file name (it has '/', '\\' or NUL)"
        if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
            return f"the name of image {i} is longer than {MAX_NAME_BYTES} bytes"
    return None


def _names_field(names: tuple[str, ...], n: int) -> bytes:
    why = names_problem(names, n)
    if why:
        raise ValueError(why)
    try:
        joined = "\0".join(names).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("image names must be valid Unicode text") from None
    return _varint(len(joined)) + joined


def _varint(value: int) -> bytes:
    if value < 0:
        raise ValueError(f"varint must be >= 0, got {value}")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def pack(header: Header, payload: bytes) -> bytes:
    """Header + payload -> file bytes (the inverse of :func:`parse`)."""
    if len(header.model_hash) != HASH_BYTES:
        raise ValueError(f"model hash must be {HASH_BYTES} bytes")
    if not 1 <= len(header.sizes) <= MAX_IMAGES:
        raise ValueError(f"a file holds 1..{MAX_IMAGES} images, got {len(header.sizes)}")
    head = bytearray(MAGIC)
    head.append(header.version)
    head += header.model_hash
    head += _varint(len(header.sizes))
    for h, w in header.sizes:
        if not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE and h * w <= MAX_PIXELS):
            raise ValueError(f"image size {h}x{w} is outside what the format stores")
        head += _varint(h) + _varint(w)
    if header.names is not None:
        head += _names_field(header.names, len(header.sizes))
    head += _varint(len(payload))
    head += struct.pack("<I", header.latent_crc & 0xFFFFFFFF)
    crc = zlib.crc32(payload, zlib.crc32(bytes(head)))
    return bytes(head) + struct.pack("<I", crc) + payload


class _Cursor:
    def __init__(self, data: bytes, source: str):
        self.data, self.pos, self.source = data, 0, source

    def fail(self, why: str) -> AevisionError:
        return AevisionError(f"{self.source}: {why}")

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            raise self.fail(f"truncated file (ends inside the header, at the {what})")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def varint(self, what: str) -> int:
        value = 0
        for i in range(_MAX_VARINT_BYTES):
            (byte,) = self.take(1, what)
            value |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                return value
        raise self.fail(f"corrupted header ({what} is not a valid number)")


def parse(data: bytes, source: str = "compressed file") -> tuple[Header, bytes]:
    """File bytes -> (header, payload), or :class:`AevisionError` naming ``source`` and the problem."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise AevisionError(f"{source}: expected bytes, got {type(data).__name__}")
    cur = _Cursor(bytes(data), source)
    if len(cur.data) < len(MAGIC) or cur.data[:len(MAGIC)] != MAGIC:
        raise cur.fail("not an aevision compressed file (bad magic bytes)")
    cur.pos = len(MAGIC)
    (version,) = cur.take(1, "format version")
    if version > VERSION:
        raise cur.fail(f"made by a newer aevision (format version {version}; this one reads {VERSION})")
    if version < 1:
        raise cur.fail(f"corrupted header (format version {version})")
    model_hash = cur.take(HASH_BYTES, "model hash")
    n = cur.varint("image count")
    if not 1 <= n <= MAX_IMAGES:
        raise cur.fail(f"corrupted header (image count {n}, expected 1..{MAX_IMAGES})")
    sizes = []
    for i in range(n):
        h, w = cur.varint(f"height of image {i}"), cur.varint(f"width of image {i}")
        if not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE and h * w <= MAX_PIXELS):
            raise cur.fail(f"corrupted header (image {i} has size {h}x{w})")
        sizes.append((h, w))
    names = _parse_names(cur, n) if version >= 2 else None
    length = cur.varint("payload length")
    (latent_crc,) = struct.unpack("<I", cur.take(4, "latent checksum"))
    head_end = cur.pos
    (crc,) = struct.unpack("<I", cur.take(4, "file checksum"))
    payload = cur.data[cur.pos:]
    if len(payload) < length:
        raise cur.fail(f"truncated file (header promises {length} payload bytes, found {len(payload)})")
    if len(payload) > length:
        raise cur.fail(f"{len(payload) - length} unexpected bytes after the payload")
    if zlib.crc32(payload, zlib.crc32(cur.data[:head_end])) != crc:
        raise cur.fail("corrupted file (checksum mismatch)")
    return Header(model_hash, tuple(sizes), latent_crc, names), payload


def _parse_names(cur: _Cursor, n: int) -> tuple[str, ...]:
    """The image names of a version 2 header: n plain names, or a one-line error."""
    length = cur.varint("length of the image names")
    if length > n * (MAX_NAME_BYTES + 1):
        raise cur.fail(f"corrupted header (image names of {length} bytes for {n} images)")
    raw = cur.take(length, "image names")
    try:
        names = tuple(raw.decode("utf-8").split("\0"))
    except UnicodeDecodeError:
        raise cur.fail("corrupted header (image names are not UTF-8)") from None
    why = names_problem(names, n)
    if why:
        raise cur.fail(f"corrupted header ({why})")
    return names
