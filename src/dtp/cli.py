"""`dtp`: thin shells over the Python API (each command maps options onto one function)."""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path

from . import __version__
from .envs.variants import DEFAULT_VARIANT, VARIANTS
from .errors import ConfigError, DTPError

ALL_TASKS = ("reach", "push", "pick-place", "button-press-topdown", "drawer-open")


def _tau(text: str) -> float:
    try:
        v = float(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"tau must be a number or 'inf', got {text!r}") from e
    if math.isnan(v) or v < 0:
        raise argparse.ArgumentTypeError(f"tau must be >= 0 (inf prunes nothing), got {text!r}")
    return v


def _k(text: str) -> int | float:
    return float(text) if any(c in text for c in ".eE") else int(text)


def _csv(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _floats(text: str) -> list[float]:
    return [_tau(x) for x in _csv(text)]


def _add_dtp_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("DTP")
    g.add_argument("--tau", type=_tau, default=None, help="tolerance of the pruning rule (default: DTPConfig's)")
    g.add_argument("--k", type=_k, default=None, help="important-region size: count, or fraction if it has a dot")
    g.add_argument("--sigma", type=float, default=None, help="Gaussian smoothing of relevance, in patches (0 = off)")
    g.add_argument("--relevance", choices=("attention", "similarity"), default=None)
    g.add_argument("--layers", type=lambda s: tuple(int(x) for x in _csv(s)), default=None,
                   help="relevance layers, comma-separated (default: middle third)")
    g.add_argument("--aggregation", choices=("mean", "max", "sum", "first", "last"), default=None)


def _dtp_config(args: argparse.Namespace):
    from .config import DTPConfig

    changes = {
        "tau": args.tau, "k": args.k, "sigma": args.sigma, "relevance": args.relevance,
        "relevance_layers": args.layers, "aggregation": args.aggregation,
    }
    return DTPConfig(**{k: v for k, v in changes.items() if v is not None})


def _add_run_options(p: argparse.ArgumentParser, *, episodes: int) -> None:
    p.add_argument("--model", default="tinyvla", help="'tinyvla' (shipped) or a checkpoint directory")
    p.add_argument("--tasks", type=_csv, default=ALL_TASKS, help="comma-separated task names")
    p.add_argument("--episodes", type=int, default=episodes, help="episodes per task and config")
    p.add_argument("--seed", type=int, default=0, help="seed set: the same seed gives the same scenes")
    p.add_argument("--distractors", type=int, default=3, help="distractor objects per scene")
    p.add_argument("--palette", choices=("train", "ood"), default="train", help="distractor split")
    _add_variant_option(p)
    p.add_argument("--max-steps", type=int, default=None, help="episode step limit (default: the env's)")


def _add_variant_option(p: argparse.ArgumentParser, lookalikes: bool = True) -> None:
    p.add_argument("--variant", choices=tuple(VARIANTS), default=DEFAULT_VARIANT,
                   help="benchmark variant: 'grounded' names colours and adds lookalikes; 'plain' is the "
                        "benchmark the shipped model was trained on (default: %(default)s)")
    if lookalikes:
        p.add_argument("--lookalikes", type=_count_range, default=None, metavar="N|LO-HI",
                       help="lookalikes per scene in the grounded variant (default: the split's, train 1-4, ood 3-6)")


def _count_range(text: str) -> tuple[int, int]:
    lo, _, hi = text.partition("-")
    try:
        return (int(lo), int(hi or lo))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a count or a range LO-HI, got {text!r}") from None


def _add_runner_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="run folder (rerun the same command to resume)")
    p.add_argument("--runner", choices=("local", "ray"), default="local")
    p.add_argument("--address", default=None, help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--workers", type=int, default=2, help="Ray workers")
    p.add_argument("--threads", type=int, default=1, help="torch threads per runner process")


# -- commands ------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import format_table, run_demo

    summary = run_demo(
        model=args.model, episodes=args.episodes, tasks=args.tasks, tau=args.tau,
        distractors=args.distractors, palette=args.palette, variant=args.variant, lookalikes=args.lookalikes,
        out_dir=args.out, seed=args.seed,
        progress=not args.json,
    )
    if not summary["trained_model"]:
        print("NOTE: no shipped checkpoint yet; this ran a random TinyVLA, so the rates mean nothing.")
    print(format_table(summary))
    print("heatmaps:", *summary["heatmaps"], sep="\n  ")
    if args.json:
        keep = {"tasks", "average", "heatmaps", "variant"}
        print(json.dumps({k: v for k, v in summary.items() if k in keep}))
    return 0


def _run_spec(args: argparse.Namespace, configs: dict, episodes_by_config: dict | None = None) -> int:
    from .eval import EvalSpec, run_eval
    from .eval.report import summary_table

    spec = EvalSpec(
        model=args.model, tasks=args.tasks, episodes=args.episodes, seed=args.seed, configs=configs,
        distractors=args.distractors, palette=args.palette, variant=args.variant, lookalikes=args.lookalikes,
        max_steps=args.max_steps, episodes_by_config=episodes_by_config or {}, threads=args.threads,
    )
    store = run_eval(spec, args.out, runner=args.runner, address=args.address, workers=args.workers)
    store.to_parquet()
    print(summary_table(store.episodes()))
    print(f"results: {args.out}/episodes.jsonl, steps.jsonl (+ .parquet); next: dtp analyze {args.out}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    dtp = _dtp_config(args)
    configs = {"baseline": dtp.replace(enabled=False)}
    if not args.baseline_only:
        configs["dtp"] = dtp
    return _run_spec(args, configs)


def cmd_sweep(args: argparse.Namespace) -> int:
    from .eval import sweep_configs

    base = _dtp_config(args)
    configs = sweep_configs(args.taus, base=base, ablations=args.ablations)
    main = {"baseline": args.main_episodes}
    default_name = f"dtp@tau={base.tau:g}"
    if default_name not in configs:
        configs[default_name] = base
    main[default_name] = args.main_episodes
    return _run_spec(args, configs, {k: v for k, v in main.items() if v})


def cmd_analyze(args: argparse.Namespace) -> int:
    from .eval.report import write_report

    path = write_report(args.run, out_dir=args.out)
    print(f"report: {path}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from .eval.show import show_episode

    paths = show_episode(args.run, key=args.episode, steps=args.steps, out_dir=args.out, gif=args.gif)
    print(*paths, sep="\n")
    return 0


def cmd_layers(args: argparse.Namespace) -> int:
    import torch

    from .eval.layer_choice import choose_layers
    from .eval.runner import EvalSpec, benchmark_env
    from .models import load, shipped_model_path

    if args.write and args.relevance != "attention":
        raise ConfigError("--write stores attention-mode layers (DTP's default relevance); drop --relevance")
    torch.set_num_threads(args.threads)
    adapter = load(args.model)
    if args.seed == 0:
        print("WARNING: seed set 0 holds the test scenes that dtp eval reports; choose layers on another set")

    def env_for(task: str):
        return benchmark_env(task, distractors=args.distractors, palette=args.palette,
                             image_size=EvalSpec.image_size, max_steps=args.max_steps, variant=args.variant,
                             lookalikes=args.lookalikes)

    choice = choose_layers(adapter, env_for, list(args.tasks), episodes=args.episodes, seed=args.seed,
                           relevance=args.relevance, progress=not args.json)
    print(f"share of task-object patches inside G ({args.relevance} relevance, k={choice.details['k']}, "
          f"chance {choice.chance:.2f}), "
          f"{choice.steps} steps, seed set {args.seed}")
    print("layers      " + " ".join(f"{t[:12]:>12}" for t in args.tasks) + "      mean")
    for name in choice.candidates:
        row = " ".join(f"{choice.per_task[t][name]:12.3f}" for t in args.tasks)
        mark = "  <- best" if choice.candidates[name] == choice.best else ""
        print(f"{name:<11} {row} {choice.coverage[name]:9.3f}{mark}")
    chosen = next(n for n, layers in choice.candidates.items() if layers == choice.best)
    result = {"model": str(args.model), "tasks": list(args.tasks), "distractors": args.distractors,
              "palette": args.palette, "variant": args.variant, "lookalikes": args.lookalikes,
              "max_steps": args.max_steps, **choice.to_dict(),
              "chosen": {"name": chosen, "layers": list(choice.best), "coverage": choice.coverage[chosen]}}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))
        print(f"written: {args.out}")
    if args.write:
        from .tinyvla.modeling import write_default_relevance_layers

        target = shipped_model_path() if str(args.model) == "tinyvla" else Path(args.model)
        path = write_default_relevance_layers(target, choice.best)
        print(f"default relevance layers {list(choice.best)} stored in {path}")
    if args.json:  # last line: one JSON object (NaN -> null) so the figure can be checked by a command
        print(json.dumps(_json_safe(result)))
    return 0


def _json_safe(value):
    """NaN/inf -> None, recursively, so json.dumps writes standard JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def cmd_collect(args: argparse.Namespace) -> int:
    from .envs.demos import collect_demos

    summary = collect_demos(
        args.out, args.tasks, args.episodes, seed=args.seed, image_size=args.image_size,
        distractor_count_range=(0, args.max_distractors), palette=args.palette, workers=args.workers,
        variant=args.variant,
    )
    print(json.dumps(summary, default=str))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .tinyvla.train import main as train_main

    return train_main(args.train_args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dtp", description="Distracting Token Pruning for vision-language-action policies (arXiv 2601.16065)."
    )
    parser.add_argument("--version", action="version", version=f"dtp {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("demo", help="shipped model on the benchmark with distractors, with and without DTP")
    _add_run_options(p, episodes=3)
    p.add_argument("--tau", type=_tau, default=None, help="DTP tolerance (default: DTPConfig's)")
    p.add_argument("--out", default="dtp-demo", help="folder for results and heatmaps")
    p.add_argument("--json", action="store_true", help="print one JSON summary on the last line")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("eval", help="baseline vs DTP over tasks x seeds, paired, resumable")
    _add_run_options(p, episodes=10)
    _add_runner_options(p)
    _add_dtp_options(p)
    p.add_argument("--baseline-only", action="store_true", help="run only the baseline (DTP off)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("sweep", help="tau grid and ablations, paired with the baseline")
    _add_run_options(p, episodes=25)
    _add_runner_options(p)
    _add_dtp_options(p)
    p.add_argument("--taus", type=_floats, default=[0.25, 0.5, 0.75, 1.0, 1.5, 2.0], help="tau grid")
    p.add_argument("--ablations", type=_csv, default=("random_anywhere", "random_outside", "no_smoothing", "similarity"))
    p.add_argument("--main-episodes", type=int, default=None,
                   help="episodes for the baseline and DTP at the default tau (default: --episodes)")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("analyze", help="statistics, plots and a report of a run folder")
    p.add_argument("run", help="run folder written by eval or sweep")
    p.add_argument("--out", default=None, help="report folder (default: RUN/report)")
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("show", help="heatmaps of chosen steps and a rollout strip of one episode (replayed)")
    p.add_argument("run", help="run folder")
    p.add_argument("--episode", default=None, help="episode key 'config|task|seed' (default: first DTP episode)")
    p.add_argument("--steps", type=lambda s: [int(x) for x in _csv(s)], default=None, help="steps to draw")
    p.add_argument("--out", default=None, help="folder (default: RUN/show)")
    p.add_argument("--gif", action="store_true", help="also write an animated GIF of the rollout")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("layers", help="choose relevance layers on validation scenes by G's coverage of the task objects")
    _add_run_options(p, episodes=2)
    p.set_defaults(seed=1)  # validation seed set; the reported tests use 0
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--out", default=None, help="write the coverage table as JSON here")
    p.add_argument("--relevance", choices=("attention", "similarity"), default="attention",
                   help="relevance mode whose layers are chosen")
    p.add_argument("--write", action="store_true",
                   help="store the best layers as the TinyVLA checkpoint's default (attention mode only)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (coverage per candidate layer set, per task, and the chosen one) "
                        "on the last line")
    p.set_defaults(func=cmd_layers)

    p = sub.add_parser("collect", help="scripted demonstrations to HDF5, resumable")
    p.add_argument("--out", default="data/demos")
    p.add_argument("--tasks", type=_csv, default=ALL_TASKS)
    p.add_argument("--episodes", type=int, default=120, help="successful episodes per task")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--max-distractors", type=int, default=3)
    p.add_argument("--palette", choices=("train", "ood"), default="train")
    _add_variant_option(p, lookalikes=False)
    p.add_argument("--workers", type=int, default=2)
    p.set_defaults(func=cmd_collect)

    p = sub.add_parser("train", help="train the TinyVLA on demonstrations (options: dtp train --help)",
                       add_help=False)
    p.add_argument("train_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_train)

    try:
        from .bench import add_bench_parser, run_bench_cli
    except ImportError:
        pass
    else:
        p = add_bench_parser(sub)
        p.set_defaults(func=run_bench_cli)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # `dtp train --flag ...`: argparse's REMAINDER misses options that come first, so the trainer's
    # options are whatever the top-level parser does not know
    args, unknown = parser.parse_known_args(argv)
    if args.command == "train":
        args.train_args = unknown + list(args.train_args)
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except DTPError as e:
        print(f"dtp {args.command}: error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:  # e.g. an unknown task name from the env
        print(f"dtp {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
