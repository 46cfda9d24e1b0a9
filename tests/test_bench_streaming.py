"""bench/streaming.py's parts: the process tree's memory, the generated folder."""

from __future__ import annotations

import os
import subprocess
import sys


def test_tree_memory_counts_child_processes(bench_script):
    bench = bench_script("streaming")
    alone_rss, alone_pss = bench.tree_memory_mib(os.getpid())
    assert alone_rss >= alone_pss > 50  # torch is loaded: tens of MiB at least, PSS <= RSS
    hold = "import time; x = bytearray(300 * 2**20); time.sleep(30)"
    child = subprocess.Popen([sys.executable, "-c", hold])
    try:
        for _ in range(100):  # until the child holds its 300 MiB
            with_child = bench.tree_memory_mib(os.getpid())[0]
            if with_child > alone_rss + 250:
                break
            subprocess.run(["sleep", "0.1"])
        assert with_child > alone_rss + 250
    finally:
        child.kill()
        child.wait()


def test_generated_folder_has_class_folders_of_jpegs(bench_script, tmp_path):
    bench = bench_script("streaming")
    root = bench.make_folder(tmp_path / "f", 25, seed=0)
    files = sorted(root.rglob("*.jpg"))
    assert len(files) == 25 and len({f.parent.name for f in files}) == 10
    assert bench.make_folder(root, 25, seed=0) == root  # done once
