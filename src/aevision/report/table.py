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
    """A rich table on stdout; ``highlight`` marks (row, column) cells in bold.

    On a narrow terminal headers and cells wrap between words, and no word (a header, a method
    name, a number) is cut short with an ellipsis (rich's own squeezing cuts "class-weighted" to
    "class-we…"): see :func:`column_widths`.
    """
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    widths = column_widths(header, rows, console.width - 3 * len(header) - 1)  # padding and borders
    table = Table(title=title, title_justify="left")
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i == 0 else "right", overflow="fold",
                         width=widths[i] if widths else None)
    marks = set(highlight)
    for r, row in enumerate(rows):
        table.add_row(*[f"[bold]{v}[/bold]" if (r, c) in marks else str(v) for c, v in enumerate(row)])
    console.print(table)


def column_widths(header: Sequence[str], rows: Sequence[Sequence[Any]], room: int) -> list[int] | None:
    """Widths that fit ``room`` characters with every column at least as wide as its longest word:
    each column's full width when they all fit, else its longest word plus a share of the space
    left, in proportion to what wrapping took from it. None when even the longest words do not fit
    (rich then folds words onto the next line instead of cutting them)."""
    texts = [[str(h), *(str(row[i]) for row in rows)] for i, h in enumerate(header)]
    full = [max(len(t) for t in col) for col in texts]
    least = [max(len(w) for t in col for w in [*t.split(), ""]) for col in texts]
    if sum(full) <= room or sum(least) > room:
        return full if sum(full) <= room else None
    spare, wants = room - sum(least), [f - m for f, m in zip(full, least, strict=True)]
    return [m + spare * w // sum(wants) for m, w in zip(least, wants, strict=True)]
