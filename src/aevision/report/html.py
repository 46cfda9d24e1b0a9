"""One self-contained HTML page: sections of paragraphs, tables and figures, images embedded.

Pure string building, no file access: every text passes through :func:`html.escape`, every image
is a ``data:image/png;base64,...`` URI, and the page needs no script and no network (a little
inline CSS), so it opens from disk anywhere, is mailed as one file and shows the same offline.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222;
       padding: 0 1em; line-height: 1.4; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { border-bottom: 1px solid #bbb; margin-top: 2em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; }
th { background: #f0f0f0; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
td.best { font-weight: bold; }
td.wins { background: #d4f4d4; } td.loses { background: #f8d4d4; }
figure { display: inline-block; margin: .5em 1em .5em 0; vertical-align: top; }
figure img { max-width: 100%; image-rendering: pixelated; border: 1px solid #ddd; }
figure.thumb img { width: 330px; image-rendering: auto; }
figure.thumb { width: 332px; }
figcaption { font-size: .85em; color: #555; }
p.note { color: #555; font-size: .9em; }
nav a { margin-right: 1em; }
"""


def esc(value: Any) -> str:
    """Any value as escaped text (floats to 4 significant digits, large ones as whole numbers)."""
    if isinstance(value, float):
        return html.escape(f"{value:,.0f}" if abs(value) >= 1e4 and value == value else f"{value:.4g}")
    return html.escape(str(value))


def data_uri(png: bytes) -> str:
    """PNG bytes -> a ``data:`` URI; anything that is not a PNG is refused (it would not decode)."""
    if not png.startswith(PNG_SIGNATURE):
        raise ValueError("not a PNG image (the page embeds PNG only)")
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def paragraph(text: str, note: bool = False) -> str:
    attribute = ' class="note"' if note else ""
    return f"<p{attribute}>{esc(text)}</p>"


def heading(text: str, level: int = 3) -> str:
    return f"<h{level}>{esc(text)}</h{level}>"


def table(header: Sequence[Any], rows: Sequence[Sequence[Any]],
          classes: dict[tuple[int, int], str] | None = None) -> str:
    """An HTML table; ``classes`` gives (row, column) cells a CSS class (``best``, ``wins``, ...)."""
    marks = classes or {}

    def cell(r: int, c: int, v: Any) -> str:
        names = " ".join(n for n in ("n" if numeric(v) else "", marks.get((r, c), "")) if n)
        return f'<td class="{esc(names)}">{esc(v)}</td>' if names else f"<td>{esc(v)}</td>"

    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(cell(r, c, v) for c, v in enumerate(row)) + "</tr>"
                   for r, row in enumerate(rows))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def numeric(value: Any) -> bool:
    """A number, or text that starts with one ("0.91 ± 0.01", "+0.02"): right-aligned."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    head = str(value).split(" ")[0]
    try:
        float(head)
    except ValueError:
        return False
    return True


def figure(png: bytes, caption: str, thumb: bool = False) -> str:
    """An embedded PNG with its caption (also the image's alt text); ``thumb``: shown small, several
    to a row (confusion matrices, overlays)."""
    kind = ' class="thumb"' if thumb else ""
    return (f'<figure{kind}><img src="{data_uri(png)}" alt="{esc(caption)}">'
            f"<figcaption>{esc(caption)}</figcaption></figure>")


@dataclass
class Section:
    """A titled part of the page; ``blocks`` are HTML fragments from the functions above."""

    title: str
    blocks: list[str] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        return "".join(ch if ch.isalnum() else "-" for ch in self.title.lower())


def page(title: str, sections: Sequence[Section], intro: Sequence[str] = ()) -> str:
    """The whole document: title, a table of contents, then every section in order."""
    nav = " ".join(f'<a href="#{esc(s.anchor)}">{esc(s.title)}</a>' for s in sections)
    parts = [f'<section id="{esc(s.anchor)}"><h2>{esc(s.title)}</h2>{"".join(s.blocks)}</section>'
             for s in sections]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>"
            f"<h1>{esc(title)}</h1>{''.join(intro)}<nav>{nav}</nav>{''.join(parts)}</body></html>\n")
