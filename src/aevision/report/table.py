"""Result tables for the terminal and for Markdown reports."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]],
                highlight: Sequence[tuple[int, int]] = ()) -> None:
    """A rich table on stdout; ``highlight`` marks (row, column) cells in bold."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i == 0 else "right")
    marks = set(highlight)
    for r, row in enumerate(rows):
        table.add_row(*[f"[bold]{v}[/bold]" if (r, c) in marks else str(v) for c, v in enumerate(row)])
    Console(highlight=False).print(table)
