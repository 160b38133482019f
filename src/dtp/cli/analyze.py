"""`dtp analyze`: statistics, plots and a report of a run folder."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "statistics, plots and a report of a run folder"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run folder written by eval or sweep")
    p.add_argument("--out", default=None, help="report folder (default: RUN/report)")


def run(args: argparse.Namespace) -> int:
    from ..analysis.report import write_report
    from ..eval.preflight import check_writable_dir

    out = Path(args.out) if args.out else Path(args.run) / "report"
    if Path(args.run).is_dir():
        check_writable_dir(out, "report folder")
    path = write_report(args.run, out_dir=args.out)
    print(f"report: {path}")
    return 0
