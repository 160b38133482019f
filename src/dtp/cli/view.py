"""`dtp view RUN`: one self-contained HTML page of a run's episodes (dtp.analysis.view)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "one self-contained HTML page of a run's episodes: frames, r/G/A/D overlays, per-step numbers, baseline beside DTP"
DESCRIPTION = ("Write RUN/view.html: opens from disk in any browser (no server, no network). Frames and maps come "
               "from runs made with --record-maps (dtp demo records them); other runs get the episode list and the "
               "per-step numbers.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run folder written by dtp eval, sweep or demo (dtp-demo/run)")
    p.add_argument("--out", default=None, help="HTML file to write (default: RUN/view.html)")
    p.add_argument("--quality", type=_quality, default=80, metavar="30-100",
                   help="WebP quality of the frames (lower: a smaller page)")


def _quality(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number from 30 to 100, got {text!r}") from None
    if not 30 <= value <= 100:
        raise argparse.ArgumentTypeError(f"must be from 30 to 100, got {value}")
    return value


def run(args: argparse.Namespace) -> int:
    from ..analysis.view import write_view
    from ..eval.preflight import check_writable_dir

    out = Path(args.out) if args.out else Path(args.run) / "view.html"
    check_writable_dir(out.parent, "view folder")
    path = write_view(args.run, out, quality=args.quality)
    print(f"view: {path} ({path.stat().st_size / 1e6:.1f} MB); open it in a browser")
    return 0
