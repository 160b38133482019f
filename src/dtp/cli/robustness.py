"""`dtp robustness`: random vs highest-attention token removal outside the task region, and the sink statistic."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from . import options as o

HELP = ("token-removal robustness: random vs highest-attention pruning outside the task region, paired with the "
        "baseline, and the attention-sink statistic")


def add_arguments(p: argparse.ArgumentParser) -> None:
    o.add_run_options(p, episodes=10, seed=o.VALIDATION_SEED)  # the reported tests use seed set 0
    o.add_runner_options(p)
    p.add_argument("--fraction", type=o.share, default=0.25,
                   help="share of the image tokens outside the task region to remove (default: %(default)s)")
    p.add_argument("--sink-every", type=o.positive, default=None, metavar="K",
                   help="score the sink statistic on every K-th step (default: the first step of each episode)")
    p.add_argument("--json", action="store_true", help="print one JSON summary on the last line")


def run(args: argparse.Namespace) -> int:
    from ..eval import EvalSpec, run_eval
    from ..experiments.robustness import format_summary, robustness_configs, robustness_summary

    o.check_runner_flags(args)
    spec = EvalSpec(configs=robustness_configs(args.fraction), **o.run_fields(args))
    store = run_eval(spec, args.out, progress=not args.json, only=args.only, **o.runner_kwargs(args))
    summary = robustness_summary(store.episodes(), store.steps(), sink_every=args.sink_every)
    summary.update(fraction=args.fraction, seed=args.seed, variant=args.variant, run_dir=str(args.out))
    print(format_summary(summary))
    if args.json:
        print(json.dumps(summary))
    return 0


def on_interrupt(args: argparse.Namespace) -> str:
    return o.episodes_saved(Path(args.out))
