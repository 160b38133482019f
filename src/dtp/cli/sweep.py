"""`dtp sweep`: a tau grid and ablations, paired with the baseline."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..choices import REGION_SOURCES, ROBOT_MASK_SOURCES, SWEEP_ABLATIONS
from ..config import ABLATIONS
from ..errors import ConfigError, did_you_mean
from . import options as o
from .eval import run_spec

HELP = "tau grid and ablations, paired with the baseline"

# What --ablations may name, known without loading torch: DTPConfig's ablation modes and the region sources
# the benchmark feeds (dtp.eval.runner.sweep_ablation_names, which sweep_configs checks again; tests/cli keep
# the two equal). The user's mask (region "mask") has no source in the benchmark.
ABLATION_NAMES = (tuple(a for a in ABLATIONS if a != "none") + tuple(s for s in REGION_SOURCES if s != "mask")
                  + tuple(f"robot_{s}" for s in ROBOT_MASK_SOURCES if s != "off"))  # robot_*: embodiment-aware G


def _ablations(text: str) -> tuple[str, ...]:
    names = o.csv(text) if text.strip() not in ("", "none") else ()
    unknown = [a for a in names if a not in ABLATION_NAMES]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown ablation {', '.join(map(repr, unknown))}{did_you_mean(unknown[0], ABLATION_NAMES)}; "
            f"choose from {', '.join(ABLATION_NAMES)} (or 'none')"
        )
    return names


def add_arguments(p: argparse.ArgumentParser) -> None:
    o.add_run_options(p, episodes=25)
    o.add_runner_options(p)
    o.add_dtp_options(p)
    p.add_argument("--taus", type=o.taus, default="0.25,0.5,0.75,1,1.5,2", help="tau grid, comma-separated")
    p.add_argument("--ablations", type=_ablations, default=",".join(SWEEP_ABLATIONS),
                   help=f"comma-separated, from {', '.join(ABLATION_NAMES)}; 'none' for no ablation")
    p.add_argument("--main-episodes", type=o.positive, default=None,
                   help="episodes for the main configs (default: --episodes)")
    p.add_argument("--main-configs", type=o.names, default=None, metavar="CONFIGS",
                   help="comma-separated configs that run --main-episodes, e.g. "
                        "baseline,dtp@tau=1,oracle@tau=1 (default: the baseline and DTP at the default tau)")
    o.add_record_maps_option(p)
    o.add_region_scores_option(p)


def run(args: argparse.Namespace) -> int:
    from ..eval import sweep_configs
    from ..eval.runner import config_name

    o.check_runner_flags(args)
    base = o.dtp_config(args)
    configs = sweep_configs(args.taus, base=base, ablations=args.ablations)
    default_name = config_name(base)
    if default_name not in configs:
        configs[default_name] = base
    main_names = args.main_configs or ("baseline", default_name)
    unknown = [c for c in main_names if c not in configs]
    if unknown:
        raise ConfigError(f"--main-configs names {', '.join(map(repr, unknown))}, not in this sweep; "
                          f"choose from {', '.join(configs)}")
    if args.main_configs and args.main_episodes is None:
        raise ConfigError("--main-configs needs --main-episodes (how many scenes they run)")
    main = {c: args.main_episodes for c in main_names} if args.main_episodes is not None else {}
    return run_spec(args, configs, main)


def on_interrupt(args: argparse.Namespace) -> str:
    return o.episodes_saved(Path(args.out))
