"""What a training run shows on the terminal: a progress bar when interactive, lines otherwise."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class Reporter:
    """Epoch summaries always (to stderr); a live bar only on a terminal and when ``bar``."""

    def __init__(self, enabled: bool, bar: bool, epochs: int, batches: int):
        self.enabled = enabled
        self.console = Console(stderr=True, highlight=False)
        interactive = self.console.is_terminal and not self.console.is_dumb_terminal
        self.progress: Progress | None = None
        self.every = max(1, batches // 50)
        self._pending = 0
        self._headed = False
        if enabled and bar and interactive:
            self.progress = Progress(
                TextColumn("[bold]epoch {task.fields[epoch]}/" + str(epochs)),
                BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"),
                console=self.console, transient=True,
            )
            self.task = self.progress.add_task("train", total=batches, epoch=1, info="")
            self.progress.start()

    def start_epoch(self, epoch: int, done: int = 0) -> None:
        if self.progress is not None:
            self.progress.reset(self.task, completed=done, epoch=epoch + 1, info="")
        self._pending = 0

    def advance(self, info: str = "") -> None:
        if self.progress is None:
            return
        self._pending += 1
        if self._pending >= self.every:
            self.progress.update(self.task, advance=self._pending, info=info)
            self._pending = 0

    def header(self, text: str) -> None:
        """``text`` (when not empty) once, before the lines it explains."""
        if text and not self._headed:
            self._headed = True
            self.line(text)

    def line(self, text: str) -> None:
        if self.enabled:
            self.console.print(text, soft_wrap=True)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def format_terms(prefix: str, terms: dict[str, Any]) -> str:
    return "  ".join(f"{prefix}{k} {v:.4g}" for k, v in terms.items())
