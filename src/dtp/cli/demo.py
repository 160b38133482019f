"""`dtp demo`: the shipped model on the benchmark with distractors, with and without DTP."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..config import DTPConfig
from . import options as o

HELP = "shipped model on the benchmark with distractors, with and without DTP"


def add_arguments(p: argparse.ArgumentParser) -> None:
    o.add_run_options(p, episodes=3, model_variant=True)
    p.set_defaults(tasks=None)  # the model's benchmark: Meta-World's five tasks, or two LIBERO tasks for a LIBERO model
    p.add_argument("--tau", type=o.tau, default=None, help=f"DTP tolerance (default: {DTPConfig().tau:g})")
    p.add_argument("--out", default="dtp-demo", help="folder for results (OUT/run) and heatmaps")
    p.add_argument("--threads", type=o.positive, default=1, help="torch threads")
    p.add_argument("--json", action="store_true", help="print one JSON summary on the last line")


def run(args: argparse.Namespace) -> int:
    from ..demo import format_table, run_demo

    summary = run_demo(tau=args.tau, out_dir=args.out, progress=not args.json, **o.run_fields(args))
    if not summary["trained_model"]:
        print("NOTE: no shipped checkpoint yet; this ran a random TinyVLA, so the rates mean nothing.")
    print(format_table(summary))
    print("heatmaps:", *summary["heatmaps"], sep="\n  ")
    run_dir = summary["run_dir"]
    print(f"results: {run_dir}/episodes.jsonl, steps.jsonl, config.json; next: dtp analyze {run_dir}; dtp view {run_dir}")
    if args.json:
        keep = {"tasks", "average", "heatmaps", "run_dir", "variant"}
        print(json.dumps({k: v for k, v in summary.items() if k in keep}))
    return 0


def on_interrupt(args: argparse.Namespace) -> str:
    return o.episodes_saved(Path(args.out) / "run")
