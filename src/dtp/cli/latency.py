"""`dtp latency`: request latency of `dtp serve` against the same DTPPolicy.step in-process (dtp.serve.latency)."""

from __future__ import annotations

import argparse

from . import options as o

HELP = "request latency of dtp serve (openpi, vla-eval) against the same DTPPolicy.step in-process"
DESCRIPTION = ("Starts `dtp serve` (openpi, then vla-eval) on 127.0.0.1, sends the Meta-World frames it steps "
               "in-process, interleaving timed rounds, and prints per-request medians and their ratio.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    o.add_model_option(p)
    p.add_argument("--frames", type=o.positive, default=8, help="frames of one push episode, sent in order")
    p.add_argument("--repeats", type=o.positive, default=5, help="timed rounds (after one warm-up round)")
    p.add_argument("--threads", type=o.positive, default=1, help="torch threads of the server and in-process")


def run(args: argparse.Namespace) -> int:
    import os

    from ..serve.latency import format_latency, measure

    os.environ.setdefault("MUJOCO_GL", "egl")
    print(format_latency(measure(args.model, args.frames, args.repeats, args.threads)))
    return 0
