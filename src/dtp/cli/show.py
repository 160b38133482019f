"""`dtp show`: heatmaps of chosen steps and a rollout strip of one episode (replayed)."""

from __future__ import annotations

import argparse

from . import options as o

HELP = "heatmaps of chosen steps and a rollout strip of one episode (replayed)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run folder")
    p.add_argument("--episode", default=None, help="episode key 'config|task|seed' (default: first DTP episode)")
    p.add_argument("--steps", type=o.steps, default=None, help="steps to draw, comma-separated (default: the middle one)")
    p.add_argument("--out", default=None, help="folder (default: RUN/show)")
    p.add_argument("--gif", action="store_true", help="also write an animated GIF of the rollout")
    p.add_argument("--threads", type=o.positive, default=1, help="torch threads")


def run(args: argparse.Namespace) -> int:
    from ..analysis.show import show_episode
    from ..demo import torch_threads

    with torch_threads(args.threads):
        paths = show_episode(args.run, key=args.episode, steps=args.steps, out_dir=args.out, gif=args.gif)
    print(*paths, sep="\n")
    return 0
