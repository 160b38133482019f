"""`dtp bench`: what DTP costs per control step, against the plain model and the naive way (dtp.bench)."""

from __future__ import annotations

import argparse
import json
from typing import Any

HELP = "time and memory of DTP per control step vs the plain model and the naive reference"
DESCRIPTION = "What DTP costs per control step, against the plain model and the naive way."


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..bench.config import DEFAULT_MODELS, DTYPES, BenchConfig
    from ..bench.models import builder_names

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
    p.add_argument("--batch-sizes", default=",".join(map(str, BenchConfig.batch_sizes)),
                   help="per-sample throughput of plain, DTP and naive stepping this many observations at once, "
                        "comma-separated ('' skips it)")
    p.add_argument("--rollout-batch", type=int, default=BenchConfig.rollout_batch,
                   help="batch of the batched-rollout row (DTP on, compared with --batch 1 in the same run)")
    p.add_argument("--rollout-batch-episodes", type=int, default=BenchConfig.rollout_batch_episodes,
                   help="episodes of the batched-rollout row at each batch (tinyvla, needs the simulator; 0 skips it)")
    p.add_argument("--json", action="store_true", help="also print one JSON object on the last line")


def config_from_args(args: argparse.Namespace):
    """The BenchConfig the options describe (ConfigError naming a bad one)."""
    from ..bench.config import DEFAULT_MODELS, BenchConfig

    models = [m.strip() for m in (args.models or "").split(",") if m.strip()]
    if args.models is None and not args.model_config:
        models = list(DEFAULT_MODELS)
    return BenchConfig(
        models=tuple(models + list(args.model_config)), device=args.device, dtype=args.dtype,
        count_work=not args.no_work, repeats=args.repeats, warmup=args.warmup, min_seconds=args.min_seconds,
        threads=args.threads, seed=args.seed, tau=args.tau, memory=not args.no_memory,
        agreement_steps=args.agreement_steps, episodes=args.episodes, batch_sizes=_sizes(args.batch_sizes),
        rollout_batch=args.rollout_batch, rollout_batch_episodes=args.rollout_batch_episodes,
    )


def _sizes(text: str) -> tuple[int, ...]:
    from ..errors import ConfigError

    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"--batch-sizes takes comma-separated integers, got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    from ..bench import format_report, run_bench

    results = run_bench(config_from_args(args))
    print(format_report(results))
    if args.json:
        print(json.dumps(results, default=_json_default))
    return 0


def _json_default(x: Any) -> Any:
    import numpy as np

    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating):
        return float(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")
