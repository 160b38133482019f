"""`dtp collect`: scripted demonstrations to HDF5, resumable."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..envs.tasks import TASK_NAMES
from ..errors import ConfigError
from . import options as o

HELP = "scripted demonstrations to HDF5, resumable"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="data/demos", help="demonstration folder (one collection's settings per folder)")
    p.add_argument("--tasks", type=o.tasks, default=",".join(TASK_NAMES), help="comma-separated task names")
    p.add_argument("--episodes", type=o.positive, default=120, help="successful episodes per task")
    p.add_argument("--seed", type=o.non_negative, default=0, help="base seed (0-9) of the demonstration scenes")
    p.add_argument("--image-size", type=o.positive, default=None,
                   help="camera image size in pixels (default: 96 on Meta-World, 128 on LIBERO)")
    p.add_argument("--max-distractors", type=o.non_negative, default=3,
                   help="each episode shows 0 to this many distractors")
    p.add_argument("--palette", choices=o.PALETTES, default=o.PALETTES[0], help="distractor colours and shapes")
    o.add_variant_option(p, lookalikes=False)
    p.add_argument("--workers", type=o.positive, default=2, help="processes (1: in this process; LIBERO runs in one)")
    p.add_argument("--wrist", action="store_true", help="LIBERO: record the wrist camera too (wrist_images)")
    p.add_argument("--no-antialias", action="store_true",
                   help="LIBERO: render without multisampling (about half the rendering time; train and test alike)")


def run(args: argparse.Namespace) -> int:
    from ..envs.libero.names import is_libero

    libero = [t for t in args.tasks if is_libero(t)]
    if libero and len(libero) < len(args.tasks):
        raise ConfigError("collect Meta-World and LIBERO tasks into separate --out folders (one run each)")
    if libero:
        from ..envs.libero.collect import collect_libero_demos

        summary = collect_libero_demos(args.out, args.tasks, args.episodes, seed=args.seed,
                                       image_size=args.image_size or 128, wrist=args.wrist,
                                       antialias=not args.no_antialias)
        print(json.dumps(summary, default=str))
        return 0
    if args.wrist or args.no_antialias:
        raise ConfigError("--wrist and --no-antialias are for LIBERO tasks")
    from ..envs.demos import collect_demos

    summary = collect_demos(
        args.out, args.tasks, args.episodes, seed=args.seed, image_size=args.image_size or 96,
        distractor_count_range=(0, args.max_distractors), palette=args.palette, workers=args.workers,
        variant=args.variant,
    )
    print(json.dumps(summary, default=str))
    return 0


def on_interrupt(args: argparse.Namespace) -> str:
    n = sum(len(list((Path(args.out) / t).glob("ep_*.h5"))) for t in args.tasks)
    return f"interrupted: {n} episodes saved in {args.out}; rerun the same command to resume"
