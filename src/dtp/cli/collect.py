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
    p.add_argument("--policy", default=None,
                   help="LIBERO, DAgger: this checkpoint moves the robot and the expert labels every step it reaches "
                        "(episodes kept whether they succeed or not)")
    p.add_argument("--beta", type=float, default=0.0,
                   help="with --policy: probability that a step executes the expert's action instead (default: 0)")
    p.add_argument("--max-steps", type=o.positive, default=None,
                   help="LIBERO: step limit of an episode (default: the suite's own, e.g. 280 on LIBERO-Object)")
    p.add_argument("--no-antialias", action="store_true",
                   help="LIBERO: render without multisampling (about half the rendering time; train and test alike)")


def run(args: argparse.Namespace) -> int:
    from ..envs.libero.names import is_libero

    libero = [t for t in args.tasks if is_libero(t)]
    if libero and len(libero) < len(args.tasks):
        raise ConfigError("collect Meta-World and LIBERO tasks into separate --out folders (one run each)")
    if libero:
        from ..envs.libero.collect import collect_libero_demos

        image_size = args.image_size or 128
        driver = policy_driver(args.policy, args.beta, image_size) if args.policy else None
        summary = collect_libero_demos(args.out, args.tasks, args.episodes, seed=args.seed, image_size=image_size,
                                       wrist=args.wrist, antialias=not args.no_antialias, driver=driver,
                                       max_steps=args.max_steps)
        print(json.dumps(summary, default=str))
        return 0
    if args.wrist or args.no_antialias or args.policy or args.beta or args.max_steps:
        raise ConfigError("--wrist, --no-antialias, --policy, --beta and --max-steps are for LIBERO tasks")
    from ..envs.demos import collect_demos

    summary = collect_demos(
        args.out, args.tasks, args.episodes, seed=args.seed, image_size=args.image_size or 96,
        distractor_count_range=(0, args.max_distractors), palette=args.palette, workers=args.workers,
        variant=args.variant,
    )
    print(json.dumps(summary, default=str))
    return 0


def policy_driver(policy: str, beta: float, image_size: int):
    """DAgger's driver: the checkpoint's baseline policy (DTP off), checked to read `image_size` px."""
    from ..config import DTPConfig
    from ..envs.libero.collect import PolicyDriver
    from ..models import load
    from ..models.base import declared_image_size
    from ..policy import DTPPolicy

    if not 0.0 <= beta < 1.0:
        raise ConfigError(f"--beta (the expert's share of executed steps) must lie in [0, 1), got {beta}")
    adapter = load(policy)
    size = declared_image_size(adapter)
    if size is not None and size != image_size:
        raise ConfigError(f"{policy} reads {size} px images; collect with --image-size {size}")
    return PolicyDriver(DTPPolicy(adapter, DTPConfig(enabled=False)), beta, str(policy))


def on_interrupt(args: argparse.Namespace) -> str:
    n = sum(len(list((Path(args.out) / t).glob("ep_*.h5"))) for t in args.tasks)
    return f"interrupted: {n} episodes saved in {args.out}; rerun the same command to resume"
