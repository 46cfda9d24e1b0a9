"""Worker pools whose processes end with the bench that started them.

A ``spawn`` worker of a ProcessPoolExecutor does not notice its parent's death: killed (``kill``,
``pkill -f``, a closed terminal), the bench leaves its workers training on, for hours, into the
same run folders a restarted bench then writes as well. Each worker here watches its parent and
exits when the parent is gone.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor

POLL_SECONDS = 1.0


def exit_with_parent(parent: int, poll: float = POLL_SECONDS) -> None:
    """Start a daemon thread that ends this process once ``parent`` is no longer its parent
    (re-parented to init or a subreaper: the parent died)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll)
        os._exit(1)  # no cleanup: the run's own checkpoints are written atomically

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def pool(jobs: int) -> ProcessPoolExecutor:
    """``jobs`` spawn workers (no forked torch state) that end with this process."""
    return ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                               initializer=exit_with_parent, initargs=(os.getpid(),))
