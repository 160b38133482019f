"""`dtp compare`: the headline of several runs side by side."""

from __future__ import annotations

import argparse

from ..errors import ConfigError

HELP = ("the headline of several runs side by side: baseline / DTP / random / oracle with 95%% CIs, paired McNemar "
        "tests and Mann-Whitney")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", metavar="NAME=RUN", help="a name for the table and a run folder")
    p.add_argument("--out", required=True, help="Markdown file to write (its numbers also go to the same name .json)")


def run(args: argparse.Namespace) -> int:
    from ..analysis.compare import write_comparison

    runs = {}
    for item in args.runs:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            raise ConfigError(f"give each run as NAME=FOLDER (e.g. grounded=runs/sweep), got {item!r}")
        if name in runs:
            raise ConfigError(f"the name {name!r} is given twice; name each run once")
        runs[name] = folder
    path = write_comparison(runs, args.out)
    print(path.read_text())
    print(f"written: {path}, {path.with_suffix('.json')}, {path.with_suffix('.png')}")
    return 0
