"""bench/workers.py: a bench's pool workers end when the bench is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"

SCRIPT = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, sys.argv[1])
    import workers

    def job(path):
        with open(path + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.replace(path + ".tmp", path)
        time.sleep(120)

    if __name__ == "__main__":
        with workers.pool(1) as pool:
            pool.submit(job, sys.argv[2])
            time.sleep(120)
""")


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")  # a zombie has exited; only its reaping is pending


def wait_for(condition, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def test_pool_workers_exit_when_the_bench_is_killed(tmp_path):
    if not Path("/proc/self/stat").exists():
        import pytest

        pytest.skip("needs /proc to see the worker")
    script, pid_file = tmp_path / "bench_like.py", tmp_path / "worker.pid"
    script.write_text(SCRIPT)
    parent = subprocess.Popen([sys.executable, str(script), str(BENCH), str(pid_file)])
    try:
        assert wait_for(pid_file.exists, 60), "the worker never started its job"
        worker = int(pid_file.read_text())
        assert alive(worker)
        os.kill(parent.pid, signal.SIGKILL)  # as `kill -9` or an OOM kill would
        parent.wait(10)
        assert wait_for(lambda: not alive(worker), 15), "the worker outlived its bench"
    finally:
        if parent.poll() is None:
            parent.kill()
