"""``aevision report``: one self-contained HTML page of a run or benchmark folder."""

from __future__ import annotations

import argparse
from typing import Any

from aevision.cli.common import Parser


def add_parser(sub: Any) -> None:
    p: Parser = sub.add_parser(
        "report", help="one HTML page (images embedded) of a benchmark or run folder",
        description="Render what DIR holds as one self-contained HTML page: a benchmark's leaderboard, "
        "verdicts, accuracy-vs-labels plots, confusion matrices, reconstructions and loss curves; a "
        "pretrain run's loss curves and reconstructions; a segment run's scores and overlays; "
        "keypoint strips; compression rate-distortion curves against JPEG and WebP.")
    p.add_argument("folder", metavar="DIR", help="a benchmark output folder (e.g. runs/demo) or a run folder")
    p.add_argument("-o", "--out", metavar="FILE.html", help="the page (default DIR/report.html)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from aevision.cli.common import output_path
    from aevision.tasks.html_report import write_report

    out = output_path(args.out, (".html", ".htm")) if args.out else None
    report = write_report(args.folder, out)
    print(f"wrote {report.path}: {', '.join(report.sections)} ({report.images} images)")
    return 0
