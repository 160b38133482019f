"""`dtp eval`: baseline vs DTP over tasks x seeds, paired, resumable."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError
from . import options as o

HELP = "baseline vs DTP over tasks x seeds, paired, resumable"


def add_arguments(p: argparse.ArgumentParser) -> None:
    o.add_run_options(p, episodes=10)
    o.add_runner_options(p)
    o.add_dtp_options(p)
    p.add_argument("--baseline-only", action="store_true", help="run only the baseline (DTP off)")
    o.add_record_maps_option(p)
    o.add_region_scores_option(p)


def run(args: argparse.Namespace) -> int:
    o.check_runner_flags(args)
    given = o.dtp_options_given(args)
    if args.baseline_only and given:
        raise ConfigError(f"{', '.join(given)} {'set' if len(given) > 1 else 'sets'} DTP, which --baseline-only "
                          "does not run; drop it or --baseline-only")
    dtp = o.dtp_config(args)
    configs = {"baseline": dtp.replace(enabled=False)}
    if not args.baseline_only:
        configs["dtp" if dtp.region == "attention" else dtp.region] = dtp  # the name carries the region
    return run_spec(args, configs)


def run_spec(args: argparse.Namespace, configs: dict, episodes_by_config: dict | None = None) -> int:
    """Run (or resume) the configs over the run options' scenes; print the summary table."""
    from ..analysis.report import summary_table
    from ..eval import EvalSpec, run_eval

    spec = EvalSpec(configs=configs, episodes_by_config=episodes_by_config or {}, record_maps=args.record_maps,
                    score_regions=not args.no_region_scores,
                    **o.run_fields(args))
    store = run_eval(spec, args.out, only=args.only, **o.runner_kwargs(args))
    store.to_parquet()
    print(summary_table(store.episodes()))
    print(f"results: {args.out}/episodes.jsonl, steps.jsonl (+ .parquet); next: dtp analyze {args.out}")
    return 0


def on_interrupt(args: argparse.Namespace) -> str:
    return o.episodes_saved(Path(args.out))
