"""Files that are either complete or absent: every artefact goes through here.

A run killed mid-write must never leave a truncated metrics file or weights file behind, so each
writer fills a temporary file in the destination folder, fsyncs it and renames it into place
(``os.replace`` is atomic on POSIX and Windows). The temporary file is created as a plain
``open()`` would create the file (mode 0o666 less the umask, the folder's default ACL), not 0600
as :func:`tempfile.mkstemp` would: results are for other users and services to read too.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any, TypeVar

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load_bytes
from safetensors.torch import save as st_save_bytes

from aevision.errors import AevisionError

T = TypeVar("T")


def user_path(value: str | os.PathLike[str]) -> Path:
    """``value`` with a leading ``~`` or ``~user`` expanded; an unknown user or home is an
    AevisionError naming the path (pathlib raises a bare RuntimeError)."""
    try:
        return Path(value).expanduser()
    except RuntimeError:
        raise AevisionError(f"{value}: no such user's home folder (the '~' cannot be expanded)") from None


def _unique(folder: Path, prefix: str, suffix: str, create: Callable[[Path], T]) -> tuple[T, Path]:
    """``create(path)`` at a fresh hidden name in ``folder``; ``create`` must fail if it exists."""
    for _ in range(100):
        path = folder / f"{prefix}{secrets.token_hex(6)}{suffix}"
        try:
            return create(path), path
        except FileExistsError:
            continue
    raise FileExistsError(f"{folder}: no free temporary name after 100 tries")


def temp_file(folder: Path, prefix: str, suffix: str = ".tmp") -> tuple[int, Path]:
    """A new file's descriptor and path, with the mode a plain ``open()`` gives (the kernel applies
    the umask, so there is no process-wide umask to read or change)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    return _unique(folder, prefix, suffix, lambda p: os.open(p, flags, 0o666))


def temp_folder(folder: Path, prefix: str) -> Path:
    """A new folder with the mode a plain ``mkdir`` gives (``tempfile.mkdtemp`` makes it 0700)."""
    return _unique(folder, prefix, "", lambda p: p.mkdir(0o777))[1]


@contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temp file next to ``path``; on success fsync and rename it to ``path``. What the
    system refuses (a folder at ``path``, no permission, a full disk) is a one-line error."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open mode must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    with _writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = temp_file(path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as f:
            yield f
            with _writing(path):
                f.flush()
                os.fsync(f.fileno())
        with _writing(path):
            os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


@contextmanager
def _writing(path: Path) -> Iterator[None]:
    try:
        yield
    except OSError as e:
        raise AevisionError(f"{path}: cannot write ({e.strerror or e})") from None


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def refuse_existing(paths: Sequence[Path], out: Path, *, overwrite: bool = False) -> None:
    """Stop before writing ``paths`` (the files a command writes into folder ``out``) when one
    exists already: a user's originals are never replaced without ``--overwrite``, and a folder in
    a file's place is refused even then."""
    folders = [p for p in paths if p.is_dir()]
    if folders:
        raise AevisionError(f"-o {out}: {folders[0]} is a folder where a file is to be written")
    existing = [p for p in paths if p.exists()]
    if existing and not overwrite:
        raise AevisionError(f"-o {out}: {existing[0].name} exists already ({len(existing)} of the "
                            f"{len(paths)} files to write); give --overwrite to replace them, or "
                            f"another folder")


@contextmanager
def staged_folder(out: Path, last: str | None = None) -> Iterator[Path]:
    """A scratch folder beside ``out`` whose files move into ``out`` (made then) when the block ends
    without an error, the one named ``last`` (a manifest vouching for the others) after the rest:
    all of a command's files or none (a failure or Ctrl-C leaves ``out`` as it was)."""
    if out.exists() and not out.is_dir():
        raise AevisionError(f"-o {out}: exists and is not a folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = temp_folder(out.parent, f".{out.name}.staging-")
    try:
        yield stage
        out.mkdir(exist_ok=True)
        for f in sorted(stage.iterdir(), key=lambda p: (p.name == last, p.name)):
            os.replace(f, out / f.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_open(path, "wb") as f, _writing(Path(path)):
        f.write(data)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_open(path, "w") as f, _writing(Path(path)):
        f.write(text)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The file's SHA-256 (hex), read in blocks: identifies a model's weights without loading them."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except FileNotFoundError:
        raise AevisionError(f"{path}: model weights not found") from None
    return h.hexdigest()


def write_json(path: str | os.PathLike[str], obj: Any, *, indent: int | None = 2) -> None:
    """``obj`` as JSON (``indent=None``: one line, for large machine-read records)."""
    separators = (",", ":") if indent is None else None
    write_text(path, json.dumps(obj, indent=indent, separators=separators, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def read_text(path: str | os.PathLike[str], what: str = "file") -> str:
    """A UTF-8 text file; a missing or unreadable one is a one-line error naming ``what`` it is."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AevisionError(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise AevisionError(f"{path}: cannot read {what} ({e})") from None


def read_json(path: str | os.PathLike[str], what: str = "JSON file") -> Any:
    path = Path(path)
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise AevisionError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None


def write_safetensors(
    path: str | os.PathLike[str],
    tensors: dict[str, torch.Tensor],
    metadata: dict[str, str] | None = None,
) -> None:
    contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    write_bytes(path, canonical_safetensors(st_save_bytes(contiguous, metadata=metadata)))


def canonical_safetensors(blob: bytes) -> bytes:
    """The same safetensors file with its JSON header's keys sorted. safetensors writes the
    metadata map in hash order, which changes from process to process, so identical weights were
    saved as files of different SHA-256: the identity run keys and stored benchmark runs use."""
    n = int.from_bytes(blob[:8], "little")
    header = json.dumps(json.loads(blob[8:8 + n]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-(8 + len(header)) % 8)  # the data starts 8-byte aligned, as safetensors pads it
    return len(header).to_bytes(8, "little") + header + blob[8 + n:]


def read_safetensors(path: str | os.PathLike[str], what: str = "weights") -> dict[str, torch.Tensor]:
    """Load tensors without pickle; a truncated or foreign file is a one-line error."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise AevisionError(f"{path}: {what} file not found") from None
    try:
        return st_load_bytes(data)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise AevisionError(f"{path}: not a valid safetensors file ({e})") from None


def write_npy(path: str | os.PathLike[str], array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    write_bytes(path, buf.getvalue())


def torch_save(path: str | os.PathLike[str], obj: Any) -> None:
    """Atomic ``torch.save``; only plain containers of tensors and numbers, so that
    :func:`torch_load` can read it back with ``weights_only=True``."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    write_bytes(path, buf.getvalue())


def torch_load(path: str | os.PathLike[str], what: str = "checkpoint") -> Any:
    """``torch.load`` with ``weights_only=True``: a pickle that would run code is refused."""
    path = Path(path)
    if not path.is_file():
        raise AevisionError(f"{path}: {what} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # the unpickler raises many types; all mean "not a safe checkpoint"
        raise AevisionError(f"{path}: refused to load {what}: {_refusal(e)}") from None


def _refusal(e: Exception) -> str:
    """Why torch refused a file, without its advice to load it with ``weights_only=False`` (which
    would run whatever code the pickle holds) and without its terminal colour codes."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip()
    if "Weights only load failed" not in text:  # a truncated or foreign file: torch's first line
        return text.splitlines()[0] if text else type(e).__name__
    found = re.search(r"WeightsUnpickler error:\s*(.*?)(?:\.\s|\.?\s*$)", text, re.MULTILINE)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not _ADVICE.search(ln)]
    reason = found.group(1) if found else lines[0] if lines else ""
    return "not a file of plain tensors and numbers" + (f" ({reason.rstrip('.')})" if reason else "")


# the lines of torch's refusal that tell how to load the file anyway
_ADVICE = re.compile(r"weights_only|Weights only load failed|trusted source|safe_globals|documentation")


def write_csv_rows(path: str | os.PathLike[str], rows: list[dict[str, Any]]) -> None:
    """Rows of dicts -> CSV with the union of their keys as header (atomic rewrite)."""
    import csv

    header: list[str] = []
    for row in rows:
        header += [k for k in row if k not in header]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buf.getvalue())
