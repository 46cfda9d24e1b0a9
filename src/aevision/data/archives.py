"""Unpacking user archives without letting them write outside their folder.

``folder:images.zip`` or ``folder:images.tar.gz`` is unpacked once into the data root and read
like a folder. Archives are untrusted: members with absolute paths, ``..`` components, links that
point outside the target, device files or other special members are refused (tar uses PEP 706's
``data`` filter; zip members are checked the same way by hand), and the whole archive is rejected
before anything is written.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from aevision.data.images import is_hidden
from aevision.errors import DataError
from aevision.io import temp_folder

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


def is_archive(path: Path) -> bool:
    name = path.name.lower()
    return path.is_file() and name.endswith(ARCHIVE_SUFFIXES)


def _check_member_name(archive: Path, name: str) -> None:
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise DataError(f"{archive}: refused: member {name!r} has an absolute path")
    if ".." in p.parts:
        raise DataError(f"{archive}: refused: member {name!r} points outside the archive folder (..)")


def _check_zip(archive: Path, zf: zipfile.ZipFile) -> None:
    for info in zf.infolist():
        _check_member_name(archive, info.filename)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise DataError(f"{archive}: refused: member {info.filename!r} is a symbolic link")
        if stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise DataError(f"{archive}: refused: member {info.filename!r} is not a regular file")


def safe_extract(archive: Path, target: Path) -> Path:
    """Extract ``archive`` into ``target`` (created), refusing anything that would escape it."""
    target.mkdir(parents=True, exist_ok=True)
    try:
        if archive.name.lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                _check_zip(archive, zf)
                zf.extractall(target)
        else:
            with tarfile.open(archive) as tf:
                for member in tf.getmembers():
                    _check_member_name(archive, member.name)
                try:
                    tf.extractall(target, filter="data")
                except tarfile.FilterError as e:
                    raise DataError(f"{archive}: refused: {e}") from None
    except (zipfile.BadZipFile, tarfile.ReadError, EOFError, OSError) as e:
        raise DataError(f"{archive}: cannot read archive ({e})") from None
    return target


def unwrap_single_folder(folder: Path) -> Path:
    """Archives usually wrap everything in one top folder (``photos/cat/...``): step into it, so
    its subfolders are the classes (or its files a flat, unlabelled set)."""
    while True:
        entries = [p for p in folder.iterdir() if not is_hidden(p.name)]
        if len(entries) != 1 or not entries[0].is_dir():
            return folder
        folder = entries[0]


def extract_cached(archive: Path, cache_root: Path) -> Path:
    """Unpack once into ``cache_root/extracted/<name>-<hash>`` (atomic: temp folder + rename)."""
    digest = hashlib.sha256()
    with archive.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    stem = archive.name.split(".")[0]
    final = cache_root / "extracted" / f"{stem}-{digest.hexdigest()[:12]}"
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_folder(final.parent, prefix=f".{stem}.")
    try:
        safe_extract(archive, tmp)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
