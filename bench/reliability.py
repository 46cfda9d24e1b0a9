#!/usr/bin/env python
"""Claim: every bad input is answered, damaged compressed files never crash the decoder, and a
killed run resumes to the weights of an uninterrupted one.

Three parts, one JSON:

- ``bad_input_cases_handled``: distinct bad inputs (config, CLI, data, archives, pickles, damaged
  files), each given to the ``aevision`` command line as a user would. A *refusal* case is
  answered when the command exits with code 2 and one line on stderr that matches what the case
  expects (no traceback); a *skip* case (a messy folder under the default policy) when the command
  succeeds and reports the skipped file. Every case is listed with its outcome.
- ``fuzz_iterations_zero_crashes``: a compressed file is mutated (truncated, bits flipped, bytes
  inserted / deleted / overwritten, random tails) and decoded, iteration after iteration. Each
  decode must end in a one-line ``AevisionError`` or in exactly the original pictures (bits the
  decoder never reads); any other exception or a different picture is a crash.
- ``kill_resume_identical``: the suite's SIGKILL test (a deterministic pretraining run killed
  mid-epoch, resumed with ``--resume``, weights compared bit for bit with an uninterrupted run),
  run here through pytest.

    python bench/reliability.py [--fuzz 10000] [--seed 0]
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import pickle
import re
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import common
from aevision.cli import main as cli
from aevision.errors import AevisionError

ROOT = Path(__file__).resolve().parent


@dataclass
class Case:
    name: str
    argv: Callable[[Path], list[str]]  # builds its inputs under the work folder
    expect: str  # regex the one-line answer must match
    skip: bool = False  # a skip case: exit 0 and the skip reported on stdout
    subprocess: bool = False  # needs its own process (e.g. it limits the process's memory)


class Evil:
    def __reduce__(self):  # unpickling runs this: a loader that unpickles would create PWNED
        return (os.system, ("touch PWNED",))


def png(path: Path, mode: str = "L", size: tuple[int, int] = (8, 8), value: int = 128) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "I;16":
        Image.fromarray(np.full(size[::-1], value * 257, dtype=np.uint16)).save(path)
    else:
        Image.new(mode, size, value if mode in ("L", "P", "I") else (value,) * len(mode)).save(path)
    return path


def folder_with(work: Path, name: str, bad: Callable[[Path], None]) -> str:
    """A folder of two good images plus one bad file (made by ``bad``)."""
    root = work / name
    png(root / "good1.png")
    png(root / "good2.png", value=30)
    bad(root)
    return str(root)


def tar_with(work: Path, name: str, member: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> str:
    path = work / f"{name}.tar"
    with tarfile.open(path, "w") as tf:
        info = tarfile.TarInfo(member)
        info.type, info.linkname = kind, link
        info.size = 1 if kind == tarfile.REGTYPE else 0
        tf.addfile(info, io.BytesIO(b"x") if kind == tarfile.REGTYPE else None)
    return f"folder:{path}"


def zip_with(work: Path, name: str, member: str, symlink: bool = False) -> str:
    path = work / f"{name}.zip"
    with zipfile.ZipFile(path, "w") as zf:
        info = zipfile.ZipInfo(member)
        if symlink:
            info.external_attr = 0o120777 << 16
        zf.writestr(info, "/etc/passwd" if symlink else b"x")
    return f"folder:{path}"


def segfolder(work: Path, name: str, damage: str) -> str:
    root = work / name
    for i in range(3):
        png(root / "images" / f"{i}.png", "RGB", (8, 8))
        if not (damage == "missing" and i == 2):
            png(root / "masks" / f"{i}.png", "L", (6, 8) if damage == "size" and i == 1 else (8, 8),
                value=7 if damage == "value" and i == 0 else 1)
    (root / "classes.txt").write_text("background\nthing\n")
    return f"segfolder:{root}"


def with_bytes(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def run_copy(work: Path, name: str, replace: str, data: bytes) -> str:
    """A copy of the trained model folder with one file replaced by ``data``."""
    import shutil

    dst = work / name
    shutil.copytree(work / "model", dst)
    (dst / replace).write_bytes(data)
    return str(dst)


def damaged_index(work: Path) -> str:
    import shutil

    dst = work / "evil-index"
    shutil.copytree(work / "index", dst)
    evil = pickle.dumps({"index": Evil()})
    meta = json.loads((dst / "index.json").read_text())
    meta["index_sha256"] = hashlib.sha256(evil).hexdigest()  # the description vouches for it
    (dst / "index.faiss").write_bytes(evil)
    (dst / "index.json").write_text(json.dumps(meta))
    return str(dst)


def aev(work: Path, name: str, mutate: Callable[[bytes], bytes]) -> str:
    data = (work / "images.aev").read_bytes()
    return str(with_bytes(work / f"{name}.aev", mutate(data)))


def flip(data: bytes, pos: int) -> bytes:
    b = bytearray(data)
    b[pos] ^= 0x04
    return bytes(b)


PRE = ["pretrain", "--model", "dense", "--epochs", "1", "--no-progress"]
ENC = ["encode"]
SEG = ["segment", "--scratch", "--epochs", "1", "--dataset"]


def decompress(w: Path) -> list[str]:
    return ["decompress", "-m", str(w / "codec")]

CASES: list[Case] = [
    # --- configuration and command line ---
    Case("unknown model", lambda w: [*PRE[:1], "--model", "nope", "--dataset", "digits"],
         r"model\.name: got 'nope', expected one of"),
    Case("unknown dataset", lambda w: [*PRE, "--dataset", "nope"],
         r"data\.name: got 'nope', expected one of"),
    Case("option of the wrong type", lambda w: [*PRE, "--dataset", "digits", "--batch-size", "many"],
         r"--batch-size.*many"),
    Case("unknown config key (typo)", lambda w: [*PRE, "--dataset", "digits", "train.epohcs=3"],
         r"train\.epohcs"),
    Case("value out of range", lambda w: [*PRE, "--dataset", "digits", "--lr", "-1"], r"lr.*-1"),
    Case("unknown architecture option", lambda w: [*PRE, "--dataset", "digits", "model.widht=3"],
         r"model\.widht"),
    Case("unknown regularizer", lambda w: [*PRE, "--dataset", "digits", "--reg", "magic"],
         r"regularizers\[0\]\.name: got 'magic'"),
    Case("missing config file", lambda w: ["pretrain", "-c", str(w / "nope.yaml")], r"nope\.yaml"),
    Case("broken YAML", lambda w: ["pretrain", "-c", str(with_bytes(w / "bad.yaml", b"model: [unclosed"))],
         r"bad\.yaml"),
    Case("config that is not a mapping",
         lambda w: ["pretrain", "-c", str(with_bytes(w / "list.yaml", b"- 1\n- 2\n"))], r"list\.yaml"),
    Case("missing dataset files (offline)",
         lambda w: [*PRE, "--dataset", "mnist", "--data-root", str(w / "empty-root"),
                    "data.download=false"], r"empty-root"),
    Case("missing model folder", lambda w: [*ENC, str(w / "no-model"), "--dataset", "digits",
                                            "-o", str(w / "f.npy")], r"no-model"),
    Case("output file of an unknown kind", lambda w: [*ENC, str(w / "model"), "--dataset", "digits",
                                                      "-o", str(w / "f.txt")], r"f\.txt"),
    Case("input image file that is not an image",
         lambda w: [*ENC, str(w / "model"), str(with_bytes(w / "x.png", b"garbage")), "-o", str(w / "f.npy")],
         r"x\.png"),
    # --- messy folders: skipped with a count by default, refused in strict mode ---
    Case("corrupt image", lambda w: [*ENC, str(w / "model"), folder_with(
        w, "corrupt", lambda r: with_bytes(r / "bad.png", b"\x89PNG\r\n\x1a\n" + os.urandom(64))),
        "-o", str(w / "f.npy")], r"skipped 1 .*bad\.png", skip=True),
    Case("truncated image", lambda w: [*ENC, str(w / "model"), folder_with(
        w, "truncated", lambda r: with_bytes(r / "half.png", (r / "good1.png").read_bytes()[:40])),
        "-o", str(w / "f.npy")], r"skipped 1 .*half\.png", skip=True),
    Case("zero-byte file", lambda w: [*ENC, str(w / "model"), folder_with(
        w, "zero", lambda r: with_bytes(r / "empty.jpg", b"")), "-o", str(w / "f.npy")],
        r"skipped 1 .*empty\.jpg", skip=True),
    Case("non-image file", lambda w: [*ENC, str(w / "model"), folder_with(
        w, "text", lambda r: with_bytes(r / "notes.txt", b"hello")), "-o", str(w / "f.npy")],
        r"skipped 1 .*notes\.txt", skip=True),
    Case("decompression bomb", lambda w: [*ENC, str(w / "model"), folder_with(
        w, "bomb", lambda r: png(r / "bomb.png", "L", (16000, 16000), 0)), "-o", str(w / "f.npy")],
        r"skipped 1 .*bomb\.png", skip=True),
    Case("mixed modes (L, LA, RGB, RGBA, P, I;16) and an EXIF-rotated JPEG", lambda w: [
        *ENC, str(w / "model"), mixed_modes(w), "-o", str(w / "mixed.npy")], r"wrote .*: 7 x", skip=True),
    Case("corrupt image in strict mode", lambda w: [
        *PRE, "--dataset", "folder:" + folder_with(
            w, "strict", lambda r: with_bytes(r / "bad.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 30)),
        "data.strict=true"], r"strict"),
    Case("empty folder", lambda w: [*PRE, "--dataset", "folder:" + str(mkdir(w / "empty"))],
         r"no readable images"),
    Case("images of different sizes without data.image_size", lambda w: [
        *PRE, "--dataset", "folder:" + folder_with(w, "sizes", lambda r: png(r / "big.png", size=(12, 9)))],
        r"differ in size"),
    Case("segmentation image without a mask", lambda w: [
        *SEG, segfolder(w, "seg-missing", "missing"), "-o", str(w / "s1")], r"2\.png"),
    Case("segmentation mask of another size than its image", lambda w: [
        *SEG, segfolder(w, "seg-size", "size"), "-o", str(w / "s2")], r"1\.png"),
    Case("segmentation mask value that is not a class", lambda w: [
        *SEG, segfolder(w, "seg-value", "value"), "-o", str(w / "s3")], r"0\.png"),
    # --- archives ---
    Case("tar member with ..", lambda w: [*PRE, "--dataset", tar_with(w, "dotdot", "../escape.png")],
         r"outside"),
    Case("tar member with an absolute path", lambda w: [*PRE, "--dataset", tar_with(w, "abs", "/tmp/x.png")],
         r"absolute"),
    Case("tar symlink escaping the target", lambda w: [
        *PRE, "--dataset", tar_with(w, "link", "l", tarfile.SYMTYPE, "/etc/passwd")], r"refused"),
    Case("tar device file", lambda w: [*PRE, "--dataset", tar_with(w, "dev", "d", tarfile.CHRTYPE)],
         r"refused"),
    Case("zip slip", lambda w: [*PRE, "--dataset", zip_with(w, "slip", "../../escape.png")], r"outside"),
    Case("zip symlink", lambda w: [*PRE, "--dataset", zip_with(w, "zlink", "l", symlink=True)],
         r"symbolic link"),
    # --- files that could carry code ---
    Case("pickle as model weights", lambda w: [
        *ENC, run_copy(w, "evil-weights", "model.safetensors", pickle.dumps(Evil())), "--dataset", "digits",
        "-o", str(w / "f.npy")], r"not a valid safetensors"),
    Case("malformed model config.json", lambda w: [
        *ENC, run_copy(w, "bad-config", "config.json", b"{not json"), "--dataset", "digits",
        "-o", str(w / "f.npy")], r"config\.json"),
    Case("pickle in a checkpoint", lambda w: [*PRE, "--dataset", "digits", "-o", evil_checkpoint(w),
                                              "--resume"], r"refused to load checkpoint"),
    Case("pickle as a search index", lambda w: [
        "search", damaged_index(w), str(w / "query.png"), "-o", str(w / "hits.json")], r"not a FAISS index"),
    # --- compressed files ---
    Case("truncated compressed file", lambda w: [
        *decompress(w), aev(w, "trunc", lambda d: d[: len(d) // 2]), "-o", str(w / "out1")], r"truncated"),
    Case("bit flip in a compressed file", lambda w: [
        *decompress(w), aev(w, "flip", lambda d: flip(d, len(d) - 5)), "-o", str(w / "out2")],
        r"trunc\w*|checksum|corrupt"),
    Case("not a compressed file", lambda w: [
        *decompress(w), str(with_bytes(w / "photo.aev", b"\x89PNG\r\n\x1a\n" + b"\0" * 50)),
        "-o", str(w / "out3")], r"bad magic|not an aevision"),
    Case("compressed file from a newer version", lambda w: [
        *decompress(w), aev(w, "newer", lambda d: d[:3] + bytes([d[3] + 1]) + d[4:]), "-o", str(w / "out4")],
        r"newer aevision"),
    # --- resources ---
    Case("memory limit below what the run needs", lambda w: [
        *PRE, "--dataset", "digits", "--max-memory", "0.05", "-o", str(w / "mem")],
        r"max.memory|memory", subprocess=True),
]


def mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def mixed_modes(work: Path) -> str:
    root = work / "mixed"
    for mode in ("L", "LA", "RGB", "RGBA", "P", "I;16"):
        png(root / f"{mode.replace(';', '')}.png", mode, (10, 7))
    img = Image.new("L", (7, 10), 200)
    exif = img.getexif()
    exif[0x0112] = 6
    img.save(root / "rotated.jpg", exif=exif)
    return str(root)


def evil_checkpoint(work: Path) -> str:
    out = work / "evil-run"
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    torch.save({"format": 1, "payload": Evil()}, out / "checkpoints" / "last.ckpt")
    return str(out)


def prepare(work: Path) -> None:
    """The artefacts the cases damage: a tiny trained model, an index and a compressed file."""
    quiet(["pretrain", "--dataset", "digits", "--model", "dense", "--limit", "200", "--epochs", "1",
           "--no-progress", "model.code_dim=8", "-o", str(work / "model")], check=True)
    png(work / "query.png", "L", (8, 8))
    quiet(["index", "digits", "-m", str(work / "model"), "--limit", "100",
           "-o", str(work / "index")], check=True)
    from aevision.models import build_model, save_model

    torch.manual_seed(0)
    codec = build_model("codec", (3, 16, 16), {"channels": 8, "code_channels": 6, "stages": 2},
                        [{"name": "hyperprior", "weight": 0.01, "channels": 5}])
    save_model(codec.eval(), work / "codec")
    photo = png(work / "photo.png", "RGB", (21, 13))
    quiet(["compress", "-m", str(work / "codec"), str(photo), "-o", str(work / "images.aev")], check=True)


def quiet(argv: list[str], check: bool = False) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli(argv)
    if check and code != 0:
        raise SystemExit(f"setup failed: aevision {' '.join(argv)}: {err.getvalue().strip()}")
    return code, out.getvalue(), err.getvalue()


def run_case(case: Case, work: Path) -> dict:
    argv = case.argv(work)
    if case.subprocess:
        p = subprocess.run([sys.executable, "-m", "aevision", *argv], capture_output=True, text=True,
                           cwd=work, timeout=300)
        code, out, err = p.returncode, p.stdout, p.stderr
    else:
        code, out, err = quiet(argv)
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith(("INFO:", "WARNING:"))]
    if case.skip:
        ok = code == 0 and re.search(case.expect, out) is not None
        answer = out.strip().splitlines()[-1] if out.strip() else err.strip()
    else:
        ok = (code == 2 and len(lines) == 1 and "Traceback" not in err
              and re.search(case.expect, lines[0]) is not None)
        answer = lines[-1] if lines else ""
    return {"case": case.name, "handled": ok, "exit_code": code, "answer": answer[:300],
            "command": "aevision " + " ".join(argv)}


def mutate(kind: str, original: bytes, rng: np.random.Generator) -> bytearray:
    """``original`` damaged in one way: file-level damage (the container's checksum should catch it),
    or (``payload_*``) damage to the range-coded payload re-packed behind valid checksums, which only
    the decoder itself can catch."""
    from aevision.coding import container

    data = bytearray(original)
    n = len(data)
    if kind.startswith("payload_"):
        header, payload = container.parse(original)
        body = bytearray(payload)
        if kind == "payload_flip":
            for _ in range(int(rng.integers(1, 4))):
                body[int(rng.integers(len(body)))] ^= 1 << int(rng.integers(8))
        elif kind == "payload_truncate":
            body = body[: int(rng.integers(len(body)))]
        else:
            body = bytearray(rng.integers(0, 256, len(body), dtype=np.uint8).tobytes())
        data = bytearray(container.pack(header, bytes(body)))
    elif kind == "truncate":
        data = data[: int(rng.integers(n))]
    elif kind == "flip":
        data[int(rng.integers(n))] ^= 1 << int(rng.integers(8))
    elif kind == "flips":
        for _ in range(int(rng.integers(2, 9))):
            data[int(rng.integers(n))] ^= 1 << int(rng.integers(8))
    elif kind == "insert":
        pos = int(rng.integers(n + 1))
        data[pos:pos] = rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8).tobytes()
    elif kind == "delete":
        pos = int(rng.integers(n))
        del data[pos: pos + int(rng.integers(1, 9))]
    elif kind == "overwrite":
        pos = int(rng.integers(n))
        chunk = rng.integers(0, 256, int(rng.integers(1, 17)), dtype=np.uint8).tobytes()
        data[pos: pos + len(chunk)] = chunk
    else:  # a random tail after a valid prefix
        cut = int(rng.integers(n))
        data = data[:cut] + rng.integers(0, 256, n - cut, dtype=np.uint8).tobytes()
    return data


def fuzz(iterations: int, seed: int, work: Path) -> dict:
    from aevision import load
    from aevision.tasks.compress import Codec

    codec = Codec(load(work / "codec"))
    original = (work / "images.aev").read_bytes()
    right = codec.decompress(original)
    rng = np.random.default_rng(seed)
    kinds = ("truncate", "flip", "flips", "insert", "delete", "overwrite", "tail",
             "payload_flip", "payload_truncate", "payload_random")
    outcomes = {"refused": 0, "same_picture": 0, "crash": 0}
    by_kind = {k: 0 for k in kinds}
    crashes: list[str] = []
    started = time.perf_counter()
    for _ in range(iterations):
        kind = kinds[int(rng.integers(len(kinds)))]
        by_kind[kind] += 1
        data = mutate(kind, original, rng)
        try:
            out = codec.decompress(bytes(data), source="fuzzed.aev")
        except AevisionError as e:
            if "\n" in str(e):
                outcomes["crash"] += 1
                crashes.append(f"{kind}: multi-line error")
            else:
                outcomes["refused"] += 1
        except Exception as e:
            outcomes["crash"] += 1
            crashes.append(f"{kind}: {type(e).__name__}: {str(e)[:120]}")
        else:
            if len(out) == len(right) and all(torch.equal(a, b) for a, b in zip(out, right, strict=True)):
                outcomes["same_picture"] += 1
            else:
                outcomes["crash"] += 1
                crashes.append(f"{kind}: decoded to a different picture")
    return {"iterations": iterations, "outcomes": outcomes, "by_kind": by_kind,
            "crashes": crashes[:20], "file_bytes": len(original),
            "seconds": round(time.perf_counter() - started, 2)}


def kill_resume() -> dict:
    test = "tests/test_reliability.py::test_sigkill_mid_epoch_then_resume_gives_the_uninterrupted_weights"
    started = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
                       cwd=ROOT.parent, capture_output=True, text=True)
    return {"passed": p.returncode == 0, "test": test, "seconds": round(time.perf_counter() - started, 1),
            "output_tail": p.stdout.strip().splitlines()[-1:] if p.stdout.strip() else p.stderr[-300:]}


def main() -> None:
    ap = common.parser(__doc__, "reliability.json")
    ap.add_argument("--fuzz", type=int, default=10000, help="fuzz iterations")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-kill", action="store_true", help="leave out the SIGKILL/resume run")
    a = ap.parse_args()
    torch.set_num_threads(2)
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ["AEVISION_DATA"] = str(work / "no-datasets-here")
        cwd = os.getcwd()
        os.chdir(work)  # a PWNED file, if anything ever unpickled a payload, would land here
        try:
            prepare(work)
            cases = [run_case(c, work) for c in CASES]
            fuzzed = fuzz(a.fuzz, a.seed, work)
            executed = (work / "PWNED").exists()
        finally:
            os.chdir(cwd)
    killed = None if a.skip_kill else kill_resume()
    result = {
        "bad_input_cases_tried": len(cases),
        "bad_input_cases_handled": sum(c["handled"] for c in cases),
        "fuzz_iterations": fuzzed["iterations"],
        "fuzz_iterations_zero_crashes": fuzzed["iterations"] if fuzzed["outcomes"]["crash"] == 0 else 0,
        "kill_resume_identical": None if killed is None else killed["passed"],
        "payload_executed": executed,
        "cases": cases,
        "fuzz": fuzzed,
        "kill_resume": killed,
        "command": common.command("reliability.py"),
        "config": {"fuzz": a.fuzz, "seed": a.seed},
        **common.provenance(started),
    }
    common.publish(a.out, result, {k: v for k, v in result.items() if k not in ("cases", "fuzz")})


if __name__ == "__main__":
    main()
