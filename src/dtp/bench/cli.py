"""`dtp bench` on the command line: the argparse parser, options -> BenchConfig, the printed report."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

import numpy as np

from ..errors import ConfigError
from .config import DEFAULT_MODELS, DTYPES, BenchConfig
from .models import builder_names
from .report import format_report
from .run import run_bench

__all__ = ["add_bench_parser", "config_from_args", "run_bench_cli", "main"]

DESCRIPTION = "What DTP costs per control step, against the plain model and the naive way."


def add_bench_parser(subparsers) -> argparse.ArgumentParser:
    """Register `dtp bench` on an argparse subparsers object; returns the parser."""
    p = subparsers.add_parser(
        "bench",
        help="time and memory of DTP per control step vs the plain model and the naive reference",
        description=DESCRIPTION,
    )
    p.add_argument("--models", default=None,
                   help=f"comma-separated, from {', '.join(builder_names())} or shape .json files "
                        f"(default: {','.join(DEFAULT_MODELS)}, or none when --model-config is given)")
    p.add_argument("--model-config", action="append", default=[], metavar="NAME_OR_JSON",
                   help="a model shape to measure with random weights: a named shape (llama-7b, llama-1b; pi0, pi0-2L, "
                        "pi0-tiny for pi0) or a JSON "
                        "file of sizes, e.g. {\"base\": \"llama-7b\", \"num_hidden_layers\": 4}; repeatable")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--dtype", default=None, choices=sorted(DTYPES),
                   help="weights and activations (default: bfloat16 on CUDA, float32 on the CPU)")
    p.add_argument("--no-work", action="store_true", help="skip counting FLOPs and operator calls")
    p.add_argument("--repeats", type=int, default=BenchConfig.repeats, help="timed rounds (medians are reported)")
    p.add_argument("--warmup", type=int, default=BenchConfig.warmup, help="untimed rounds first")
    p.add_argument("--min-seconds", type=float, default=BenchConfig.min_seconds,
                   help="keep timing rounds until the slowest variant has this many seconds of calls")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tau", type=float, default=None, help="DTP tau (default: the largest of a ladder that prunes)")
    p.add_argument("--no-memory", action="store_true", help="skip the profiler's peak-tensor measurement")
    p.add_argument("--agreement-steps", type=int, default=BenchConfig.agreement_steps,
                   help="frames on which approx_image is compared with exact (tinyvla)")
    p.add_argument("--episodes", type=int, default=BenchConfig.episodes,
                   help="rollouts per setting for the throughput line (tinyvla, needs the simulator)")
    p.add_argument("--json", action="store_true", help="also print one JSON object on the last line")
    p.set_defaults(func=run_bench_cli)
    return p


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    models = [m.strip() for m in (args.models or "").split(",") if m.strip()]
    if args.models is None and not args.model_config:
        models = list(DEFAULT_MODELS)
    return BenchConfig(
        models=tuple(models + list(args.model_config)),
        device=args.device,
        dtype=args.dtype,
        count_work=not args.no_work,
        repeats=args.repeats,
        warmup=args.warmup,
        min_seconds=args.min_seconds,
        threads=args.threads,
        seed=args.seed,
        tau=args.tau,
        memory=not args.no_memory,
        agreement_steps=args.agreement_steps,
        episodes=args.episodes,
    )


def run_bench_cli(args: argparse.Namespace) -> int:
    try:
        cfg = config_from_args(args)
    except ConfigError as e:
        print(f"dtp bench: error: {e}", file=sys.stderr)
        return 2
    results = run_bench(cfg)
    print(format_report(results))
    if args.json:
        print(json.dumps(results, default=_json_default))
    return 0


def _json_default(x: Any) -> Any:
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def main(argv: list[str] | None = None) -> int:
    """`python -m dtp.bench ...` until the CLI wires `dtp bench`."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    parser = argparse.ArgumentParser(prog="dtp")
    sub = parser.add_subparsers(dest="command", required=True)
    add_bench_parser(sub)
    args = parser.parse_args(["bench", *(argv if argv is not None else sys.argv[1:])])
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
