"""`dtp swap`: does G follow the colour words? Swap the named colour for a lookalike's."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import ConfigError
from . import options as o

HELP = ("does G follow the colour words? swap the named colour for a lookalike's (grounded variant, "
        "validation scenes)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    o.add_model_option(p)
    p.add_argument("--tasks", type=o.tasks, default="reach,push,pick-place", help="comma-separated task names")
    p.add_argument("--episodes", type=o.positive, default=10, help="scenes per task (first frame of each)")
    p.add_argument("--seed", type=o.non_negative, default=o.VALIDATION_SEED, help=o.seed_help(o.VALIDATION_SEED))
    p.add_argument("--distractors", type=o.non_negative, default=3, help="generic distractors per scene")
    p.add_argument("--palette", choices=o.PALETTES, default=o.PALETTES[0], help="colours and shapes of the split")
    p.add_argument("--lookalikes", type=o.count_range, default=None, metavar="N|LO-HI",
                   help=f"lookalikes per scene (default: {o.lookalike_ranges()})")
    p.add_argument("--threads", type=o.positive, default=1, help="torch threads")
    p.add_argument("--out", default=None, help="write a PNG of the first frames (image, G original, G swapped)")
    p.add_argument("--figure-frames", type=o.positive, default=4, help="frames drawn in --out")
    p.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    o.add_dtp_options(p)  # G's size, smoothing, source and layers (DTP itself stays off)


def run(args: argparse.Namespace) -> int:
    from ..demo import torch_threads
    from ..envs.benchmark import benchmark_env
    from ..eval.preflight import check_tasks, check_writable_dir
    from ..eval.runner import EvalSpec
    from ..experiments.colour_swap import colour_swap, format_swap_summary
    from ..models import load

    if args.out:
        if not str(args.out).lower().endswith(".png") or Path(args.out).is_dir():
            raise ConfigError(f"--out names a PNG file, got {args.out}")
        check_writable_dir(Path(args.out).parent, "folder of --out")
    check_tasks(args.tasks)
    if args.seed == 0:
        print("WARNING: seed set 0 holds the test scenes that dtp eval reports; measure on another set")
    adapter = load(args.model)

    def env_for(task: str):
        return benchmark_env(task, distractors=args.distractors, palette=args.palette,
                             image_size=EvalSpec.image_size, variant="grounded", lookalikes=args.lookalikes)

    with torch_threads(args.threads):
        result = colour_swap(adapter, env_for, list(args.tasks), episodes=args.episodes, seed=args.seed,
                             config=o.dtp_config(args))
    summary = {"model": str(args.model), "tasks": list(args.tasks), "palette": args.palette,
               "lookalikes": args.lookalikes, **result.summary()}
    print(format_swap_summary(summary))
    if args.out:
        from ..analysis.heatmaps import save_swap_figure

        print(f"written: {save_swap_figure(result.sample(args.figure_frames), args.out)}")
    if args.json:
        print(json.dumps(o.json_safe(summary)))
    return 0
