"""`dtp`: thin shells over the Python API (each command maps options onto one function).

User mistakes end as one stderr line and exit code 2 (the traceback only with -v); Ctrl-C
says what was saved and exits 130. Everything a run depends on is checked before its
folder is created (see dtp.eval.preflight), so a typo never leaves a half-made run behind.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import traceback
from pathlib import Path

from . import __version__
from .envs.tasks import TASK_NAMES
from .envs.variants import DEFAULT_VARIANT, VARIANTS
from .errors import ConfigError, DTPError
from .view_command import add_record_maps_option, add_view_parser  # dtp view, eval's --record-maps



class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends '(default: X)' to every option whose default means something (not None, not a flag's False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_ = action.help or ""
        if action.default is None or action.default is False or not action.option_strings:
            return help_
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """Defaults in every --help; a usage mistake is one line pointing at --help."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# -- option types: each says what it wants in the user's words -----------------------------
def _int_at_least(lo: int, what: str = "a whole number"):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"must be >= {lo}, got {v}")
        return v

    return parse


_positive = _int_at_least(1)
_non_negative = _int_at_least(0)


def _tau(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"tau must be a number or 'inf', got {text!r}") from None
    if math.isnan(v) or v < 0:
        raise argparse.ArgumentTypeError(f"tau must be >= 0 (inf prunes nothing), got {text!r}")
    return v


def _k(text: str) -> int | float:
    try:
        return float(text) if any(c in text for c in ".eE") else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"k is a count of image tokens (e.g. 16) or a fraction of them with a dot (e.g. 0.25), got {text!r}"
        ) from None


def _csv(text: str) -> tuple[str, ...]:
    items = tuple(dict.fromkeys(x.strip() for x in text.split(",") if x.strip()))  # in order, once each
    if not items:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return items


def _key_value(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _floats(text: str) -> list[float]:
    return [_tau(x) for x in _csv(text)]


def _layers(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in _csv(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"layers are comma-separated layer numbers (e.g. 1,2), got {text!r}") from None


def _steps(text: str) -> list[int]:
    try:
        return [int(x) for x in _csv(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"steps are comma-separated step numbers (e.g. 0,10), got {text!r}") from None


def _ablations(text: str) -> tuple[str, ...]:
    from .eval.runner import sweep_ablation_names

    names = _csv(text) if text.strip() not in ("", "none") else ()
    valid = sweep_ablation_names()
    unknown = [a for a in names if a not in valid]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown ablation {', '.join(map(repr, unknown))}; choose from {', '.join(valid)} (or 'none')"
        )
    return names


# -- shared options ----------------------------------------------------------------------------
DTP_FLAGS = {"tau": "--tau", "k": "--k", "sigma": "--sigma", "relevance": "--relevance", "region": "--region",
             "layers": "--layers",
             "aggregation": "--aggregation"}


def _add_dtp_options(p: argparse.ArgumentParser) -> None:
    from .config import RELEVANCE_MODES, DTPConfig
    from .core import AGGREGATIONS
    from .regions import region_sources

    d = DTPConfig()
    g = p.add_argument_group("DTP")
    g.add_argument("--tau", type=_tau, default=None,
                   help=f"tolerance of the pruning rule: smaller prunes more, inf prunes nothing (default: {d.tau:g})")
    g.add_argument("--k", type=_k, default=None,
                   help=f"important-region size: a count of image tokens, or a fraction if it has a dot (default: {d.k})")
    g.add_argument("--sigma", type=float, default=None,
                   help=f"Gaussian smoothing of relevance, in patches, 0 = off (default: {d.sigma:g})")
    g.add_argument("--region", choices=region_sources(), default=None,
                   help="where the important region G comes from: attention, similarity, oracle (the simulator's "
                        f"segmentation of task object, goal, gripper) (default: {d.region})")
    g.add_argument("--relevance", choices=RELEVANCE_MODES, default=None, help="old name of --region")
    g.add_argument("--layers", type=_layers, default=None,
                   help="relevance layers, comma-separated (default: the checkpoint's stored choice, else the middle "
                        "third; the run's config.json records the layers used)")
    g.add_argument("--aggregation", choices=AGGREGATIONS, default=None,
                   help=f"how attention combines over the action tokens (default: {d.aggregation})")


def _dtp_config(args: argparse.Namespace):
    from .config import DTPConfig

    changes = {
        "tau": args.tau, "k": args.k, "sigma": args.sigma, "relevance": args.relevance, "region": args.region,
        "relevance_layers": args.layers, "aggregation": args.aggregation,
    }
    return DTPConfig(**{k: v for k, v in changes.items() if v is not None})


def _add_run_options(p: argparse.ArgumentParser, *, episodes: int, model_variant: bool = False) -> None:
    p.add_argument("--model", default="tinyvla", help="a shipped model ('tinyvla', 'tinyvla-plain') or a checkpoint directory")
    p.add_argument("--tasks", type=_csv, default=",".join(TASK_NAMES), help="comma-separated task names")
    p.add_argument("--episodes", type=_positive, default=episodes, help="episodes per task and config")
    p.add_argument("--seed", type=_non_negative, default=0, help="seed set: the same seed gives the same scenes")
    p.add_argument("--distractors", type=_non_negative, default=3, help="distractor objects per scene")
    p.add_argument("--palette", choices=("train", "ood"), default="train", help="distractor colours and shapes")
    _add_variant_option(p, model_variant=model_variant)
    p.add_argument("--max-steps", type=_positive, default=None, help="episode step limit (default: the env's)")


def _add_variant_option(p: argparse.ArgumentParser, lookalikes: bool = True, model_variant: bool = False) -> None:
    what = ("benchmark variant: 'grounded' names colours and adds lookalikes; 'plain' is the benchmark "
            "the shipped model was trained on")
    if model_variant:  # dtp demo: show the model on its own benchmark
        p.add_argument("--variant", choices=tuple(VARIANTS), default=None,
                       help=f"{what} (default: the variant the model was trained on, which its checkpoint "
                            f"records; else {DEFAULT_VARIANT})")
    else:
        p.add_argument("--variant", choices=tuple(VARIANTS), default=DEFAULT_VARIANT,
                       help=f"{what} (default: %(default)s)")
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
    p.add_argument("--runner", choices=("local", "ray"), default="local", help="who runs the episodes")
    p.add_argument("--address", default=None, help="Ray cluster address (--runner ray only; default: a local Ray)")
    p.add_argument("--workers", type=_positive, default=None, help="Ray workers (--runner ray only; default: 2)")
    p.add_argument("--threads", type=_positive, default=1, help="torch threads per runner process")
    p.add_argument("--only", type=_names, default=None, metavar="CONFIGS",
                   help="run only these configs now, comma-separated (e.g. the headline ones first); "
                        "the rest stay to do and a rerun without --only completes the run")


def _check_runner_flags(args: argparse.Namespace) -> None:
    """--address/--workers only mean something with Ray: refuse them otherwise rather than ignore them."""
    given = [flag for flag, v in (("--address", args.address), ("--workers", args.workers)) if v is not None]
    if args.runner != "ray" and given:
        verb = "apply" if len(given) > 1 else "applies"
        raise ConfigError(f"{' and '.join(given)} only {verb} to --runner ray; add --runner ray or drop it")
    if args.workers is None:
        args.workers = 2


# -- what a Ctrl-C leaves behind -----------------------------------------------------------------
def _episodes_saved(run: Path) -> str:
    from .eval.runner import EvalSpec
    from .eval.store import CONFIG, RunStore

    if not (run / CONFIG).is_file():
        return "interrupted before any episode ran; nothing saved"
    store = RunStore(run)
    total = len(EvalSpec.from_dict(store.config()).jobs())
    return f"interrupted: {len(store.episodes())} of {total} episodes saved in {run}; rerun the same command to resume"


# -- commands ------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import format_table, run_demo

    summary = run_demo(
        model=args.model, episodes=args.episodes, tasks=args.tasks, tau=args.tau,
        distractors=args.distractors, palette=args.palette, variant=args.variant, lookalikes=args.lookalikes,
        out_dir=args.out, seed=args.seed, max_steps=args.max_steps, threads=args.threads, progress=not args.json,
    )
    if not summary["trained_model"]:
        print("NOTE: no shipped checkpoint yet; this ran a random TinyVLA, so the rates mean nothing.")
    print(format_table(summary))
    print("heatmaps:", *summary["heatmaps"], sep="\n  ")
    run = summary["run_dir"]
    print(f"results: {run}/episodes.jsonl, steps.jsonl, config.json; next: dtp analyze {run}; dtp view {run}")
    if args.json:
        keep = {"tasks", "average", "heatmaps", "run_dir", "variant"}
        print(json.dumps({k: v for k, v in summary.items() if k in keep}))
    return 0


def _run_spec(args: argparse.Namespace, configs: dict, episodes_by_config: dict | None = None) -> int:
    from .eval import EvalSpec, run_eval
    from .analysis.report import summary_table

    spec = EvalSpec(
        model=args.model, tasks=args.tasks, episodes=args.episodes, seed=args.seed, configs=configs,
        distractors=args.distractors, palette=args.palette, variant=args.variant, lookalikes=args.lookalikes,
        max_steps=args.max_steps, episodes_by_config=episodes_by_config or {}, threads=args.threads,
        record_maps=args.record_maps,
    )
    store = run_eval(spec, args.out, runner=args.runner, address=args.address, workers=args.workers,
                     only=args.only)
    store.to_parquet()
    print(summary_table(store.episodes()))
    print(f"results: {args.out}/episodes.jsonl, steps.jsonl (+ .parquet); next: dtp analyze {args.out}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    _check_runner_flags(args)
    given = [flag for name, flag in DTP_FLAGS.items() if getattr(args, name) is not None]
    if args.baseline_only and given:
        raise ConfigError(f"{', '.join(given)} {'set' if len(given) > 1 else 'sets'} DTP, which --baseline-only "
                          "does not run; drop it or --baseline-only")
    dtp = _dtp_config(args)
    configs = {"baseline": dtp.replace(enabled=False)}
    if not args.baseline_only:
        configs["dtp" if dtp.region == "attention" else dtp.region] = dtp  # the name carries the region
    return _run_spec(args, configs)


def cmd_sweep(args: argparse.Namespace) -> int:
    from .eval import sweep_configs
    from .eval.runner import config_name

    _check_runner_flags(args)
    base = _dtp_config(args)
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
    return _run_spec(args, configs, main)


def _names(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise argparse.ArgumentTypeError("expected comma-separated config names, got none")
    return names


def _share(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a share in (0, 1], got {text!r}") from None
    if not 0.0 < v <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a share in (0, 1], got {text!r}")
    return v


def cmd_compare(args: argparse.Namespace) -> int:
    from .analysis.compare import write_comparison

    runs = {}
    for item in args.runs:
        name, sep, run = item.partition("=")
        if not sep or not name or not run:
            raise ConfigError(f"give each run as NAME=FOLDER (e.g. grounded=runs/sweep), got {item!r}")
        if name in runs:
            raise ConfigError(f"the name {name!r} is given twice; name each run once")
        runs[name] = run
    path = write_comparison(runs, args.out)
    print(path.read_text())
    print(f"written: {path}, {path.with_suffix('.json')}, {path.with_suffix('.png')}")
    return 0


def cmd_robustness(args: argparse.Namespace) -> int:
    from .eval import EvalSpec, run_eval
    from .experiments.robustness import format_summary, robustness_configs, robustness_summary

    _check_runner_flags(args)
    spec = EvalSpec(
        model=args.model, tasks=args.tasks, episodes=args.episodes, seed=args.seed,
        configs=robustness_configs(args.fraction), distractors=args.distractors, palette=args.palette,
        variant=args.variant, lookalikes=args.lookalikes, max_steps=args.max_steps, threads=args.threads,
    )
    store = run_eval(spec, args.out, runner=args.runner, address=args.address, workers=args.workers,
                     progress=not args.json, only=args.only)
    summary = robustness_summary(store.episodes(), store.steps(), sink_every=args.sink_every)
    summary.update(fraction=args.fraction, seed=args.seed, variant=args.variant, run_dir=str(args.out))
    print(format_summary(summary))
    if args.json:
        print(json.dumps(summary))
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from .eval.preflight import check_writable_dir
    from .analysis.report import write_report

    out = Path(args.out) if args.out else Path(args.run) / "report"
    if Path(args.run).is_dir():
        check_writable_dir(out, "report folder")
    path = write_report(args.run, out_dir=args.out)
    print(f"report: {path}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from .demo import torch_threads
    from .analysis.show import show_episode

    with torch_threads(args.threads):
        paths = show_episode(args.run, key=args.episode, steps=args.steps, out_dir=args.out, gif=args.gif)
    print(*paths, sep="\n")
    return 0


def _layers_target(args: argparse.Namespace) -> Path | None:
    """The checkpoint --write would change, checked before any rollout: writable, and the shipped one only with --force."""
    import os

    from .models import SHIPPED_MODELS, shipped_model_path

    if not args.write:
        return None
    if args.relevance != "attention":
        raise ConfigError("--write stores attention-mode layers (DTP's default relevance); drop --relevance")
    shipped = str(args.model) in SHIPPED_MODELS
    target = shipped_model_path(str(args.model)) if shipped else Path(args.model)
    cfg = target / "config.json"
    if shipped and not args.force:
        raise ConfigError(
            f"--write would change the model installed with dtp ({target}); copy it and name the copy "
            f"(cp -r {target} my-tinyvla; dtp layers --model my-tinyvla --write), or add --force"
        )
    if not cfg.is_file():
        raise ConfigError(f"--write needs a TinyVLA checkpoint folder with a config.json; {target} has none")
    if not os.access(cfg, os.W_OK):
        raise ConfigError(f"--write cannot change {cfg}: the file is read-only")
    if shipped:
        print(f"WARNING: --force: storing the chosen layers in the installed model {target}", file=sys.stderr)
    return target


def cmd_layers(args: argparse.Namespace) -> int:
    from .demo import torch_threads
    from .experiments.layer_choice import choose_layers
    from .envs.benchmark import benchmark_env
    from .eval.runner import EvalSpec
    from .models import load

    target = _layers_target(args)
    if args.out:
        out = Path(args.out)
        if out.is_dir():
            raise ConfigError(f"--out {out} is a folder; name a JSON file")
        from .eval.preflight import check_writable_dir

        check_writable_dir(out.parent, "folder of --out")
    from .eval.preflight import check_tasks

    check_tasks(args.tasks)
    adapter = load(args.model)
    if args.seed == 0:
        print("WARNING: seed set 0 holds the test scenes that dtp eval reports; choose layers on another set")

    def env_for(task: str):
        return benchmark_env(task, distractors=args.distractors, palette=args.palette,
                             image_size=EvalSpec.image_size, max_steps=args.max_steps, variant=args.variant,
                             lookalikes=args.lookalikes)

    with torch_threads(args.threads):
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
    print("share of the named parts (task object and goal, no gripper) inside G: "
          + ", ".join(f"{name} {v:.3f}" for name, v in choice.named_coverage.items()))
    chosen = next(n for n, layers in choice.candidates.items() if layers == choice.best)
    result = {"model": str(args.model), "tasks": list(args.tasks), "distractors": args.distractors,
              "palette": args.palette, "variant": args.variant, "lookalikes": args.lookalikes,
              "max_steps": args.max_steps, **choice.to_dict(),
              "chosen": {"name": chosen, "layers": list(choice.best), "coverage": choice.coverage[chosen]}}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))
        print(f"written: {args.out}")
    if target is not None:
        from .tinyvla.modeling import write_default_relevance_layers

        path = write_default_relevance_layers(target, choice.best)
        print(f"default relevance layers {list(choice.best)} stored in {path}")
    if args.json:  # last line: one JSON object (NaN -> null) so the figure can be checked by a command
        print(json.dumps(_json_safe(result)))
    return 0


def cmd_swap(args: argparse.Namespace) -> int:
    from .demo import torch_threads
    from .experiments.colour_swap import colour_swap
    from .eval.preflight import check_tasks
    from .envs.benchmark import benchmark_env
    from .eval.runner import EvalSpec
    from .models import load

    if args.out:
        if not str(args.out).lower().endswith(".png") or Path(args.out).is_dir():
            raise ConfigError(f"--out names a PNG file, got {args.out}")
        from .eval.preflight import check_writable_dir

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
                             config=_dtp_config(args))
    summary = {"model": str(args.model), "tasks": list(args.tasks), "palette": args.palette,
               "lookalikes": args.lookalikes, **result.summary()}
    print(f"G moved onto the lookalike when its colour word was named: {summary['moved']}/{summary['frames']} "
          f"frames, 95% CI {summary['ci95'][0]:.2f}-{summary['ci95'][1]:.2f} (seed set {args.seed})")
    for t, r in summary["per_task"].items():
        print(f"  {t:<12} {r['moved']}/{r['frames']}")
    if args.out:
        from .analysis.heatmaps import save_swap_figure

        print(f"written: {save_swap_figure(result.sample(args.figure_frames), args.out)}")
    if args.json:
        print(json.dumps(_json_safe(summary)))
    return 0


def _demos_saved(args: argparse.Namespace) -> str:
    n = sum(len(list((Path(args.out) / t).glob("ep_*.h5"))) for t in args.tasks)
    return f"interrupted: {n} episodes saved in {args.out}; rerun the same command to resume"


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
    from .tinyvla.train import config_from_args, resume_if_same, train

    argv = list(args.train_args)
    cfg = resume_if_same(config_from_args(argv, prog="dtp train", parser_class=Parser))
    args.train_config = cfg  # for the Ctrl-C note
    print(train(cfg, command="dtp train " + " ".join(argv)))
    return 0


def _train_saved(args: argparse.Namespace) -> str:
    from .tinyvla.train import interrupted_note

    return interrupted_note(getattr(args, "train_config", None))


def cmd_serve(args: argparse.Namespace) -> int:
    import os

    import torch

    from .models import SHIPPED_MODELS, load
    from .serve import ServedPolicy, check_bind, serve

    check_bind(args.host, args.allow_remote, warn=False)  # before loading the model
    torch.set_num_threads(args.threads)
    dtp = _dtp_config(args)
    if args.no_dtp:
        dtp = dtp.replace(enabled=False)
    served = ServedPolicy(load(args.model, **dict(args.model_arg)), dtp, model_name=str(args.model),
                          observe=args.diagnostics)
    action_spec = None
    if args.protocol == "vla-eval" and str(args.model) in SHIPPED_MODELS:
        from .serve.vlaeval import require_vla_eval

        require_vla_eval()
        from .serve.benchmark import METAWORLD_ACTION_SPEC

        action_spec = METAWORLD_ACTION_SPEC
    serve(served, protocol=args.protocol, host=args.host, port=args.port, allow_remote=args.allow_remote,
          api_key=os.environ.get("DTP_SERVE_API_KEY") or None, diagnostics=args.diagnostics, action_spec=action_spec)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="dtp", description="Distracting Token Pruning for vision-language-action policies (arXiv 2601.16065)."
    )
    parser.add_argument("--version", action="version", version=f"dtp {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug logging, third-party logs, and tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=Parser)

    p = sub.add_parser("demo", help="shipped model on the benchmark with distractors, with and without DTP")
    _add_run_options(p, episodes=3, model_variant=True)
    p.add_argument("--tau", type=_tau, default=None, help="DTP tolerance (default: 1)")
    p.add_argument("--out", default="dtp-demo", help="folder for results (OUT/run) and heatmaps")
    p.add_argument("--threads", type=_positive, default=1, help="torch threads")
    p.add_argument("--json", action="store_true", help="print one JSON summary on the last line")
    p.set_defaults(func=cmd_demo, on_interrupt=lambda a: _episodes_saved(Path(a.out) / "run"))

    p = sub.add_parser("eval", help="baseline vs DTP over tasks x seeds, paired, resumable")
    _add_run_options(p, episodes=10)
    _add_runner_options(p)
    _add_dtp_options(p)
    p.add_argument("--baseline-only", action="store_true", help="run only the baseline (DTP off)")
    add_record_maps_option(p)
    p.set_defaults(func=cmd_eval, on_interrupt=lambda a: _episodes_saved(Path(a.out)))

    from .eval.runner import SWEEP_ABLATIONS, sweep_ablation_names

    p = sub.add_parser("sweep", help="tau grid and ablations, paired with the baseline")
    _add_run_options(p, episodes=25)
    _add_runner_options(p)
    _add_dtp_options(p)
    p.add_argument("--taus", type=_floats, default="0.25,0.5,0.75,1,1.5,2", help="tau grid, comma-separated")
    p.add_argument("--ablations", type=_ablations, default=",".join(SWEEP_ABLATIONS),
                   help=f"comma-separated, from {', '.join(sweep_ablation_names())}; 'none' for no ablation")
    p.add_argument("--main-episodes", type=_positive, default=None,
                   help="episodes for the main configs (default: --episodes)")
    p.add_argument("--main-configs", type=_names, default=None, metavar="CONFIGS",
                   help="comma-separated configs that run --main-episodes, e.g. "
                        "baseline,dtp@tau=1,oracle@tau=1 (default: the baseline and DTP at the default tau)")
    add_record_maps_option(p)
    p.set_defaults(func=cmd_sweep, on_interrupt=lambda a: _episodes_saved(Path(a.out)))

    p = sub.add_parser("robustness", help="token-removal robustness: random vs highest-attention pruning outside "
                                          "the task region, paired with the baseline, and the attention-sink statistic")
    _add_run_options(p, episodes=10)
    p.set_defaults(seed=1)  # validation seed set; the reported tests use 0
    _add_runner_options(p)
    p.add_argument("--fraction", type=_share, default=0.25,
                   help="share of the image tokens outside the task region to remove (default: %(default)s)")
    p.add_argument("--sink-every", type=_positive, default=None, metavar="K",
                   help="score the sink statistic on every K-th step (default: the first step of each episode)")
    p.add_argument("--json", action="store_true", help="print one JSON summary on the last line")
    p.set_defaults(func=cmd_robustness, on_interrupt=lambda a: _episodes_saved(Path(a.out)))

    p = sub.add_parser("compare", help="the headline of several runs side by side: baseline / DTP / random / "
                                       "oracle with 95%% CIs, paired McNemar tests and Mann-Whitney")
    p.add_argument("runs", nargs="+", metavar="NAME=RUN", help="a name for the table and a run folder")
    p.add_argument("--out", required=True, help="Markdown file to write (its numbers also go to the same name .json)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("analyze", help="statistics, plots and a report of a run folder")
    p.add_argument("run", help="run folder written by eval or sweep")
    p.add_argument("--out", default=None, help="report folder (default: RUN/report)")
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("show", help="heatmaps of chosen steps and a rollout strip of one episode (replayed)")
    p.add_argument("run", help="run folder")
    p.add_argument("--episode", default=None, help="episode key 'config|task|seed' (default: first DTP episode)")
    p.add_argument("--steps", type=_steps, default=None, help="steps to draw, comma-separated (default: the middle one)")
    p.add_argument("--out", default=None, help="folder (default: RUN/show)")
    p.add_argument("--gif", action="store_true", help="also write an animated GIF of the rollout")
    p.add_argument("--threads", type=_positive, default=1, help="torch threads")
    p.set_defaults(func=cmd_show)

    add_view_parser(sub)

    p = sub.add_parser("layers", help="choose relevance layers on validation scenes by G's coverage of the task objects")
    _add_run_options(p, episodes=2)
    p.set_defaults(seed=1)  # validation seed set; the reported tests use 0
    p.add_argument("--threads", type=_positive, default=1, help="torch threads")
    p.add_argument("--out", default=None, help="write the coverage table as JSON here")
    p.add_argument("--relevance", choices=("attention", "similarity"), default="attention",
                   help="relevance mode whose layers are chosen")
    p.add_argument("--write", action="store_true",
                   help="store the best layers as the default of the --model checkpoint (attention mode only)")
    p.add_argument("--force", action="store_true", help="let --write change the model installed with dtp")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (coverage per candidate layer set, per task, and the chosen one) "
                        "on the last line")
    p.set_defaults(func=cmd_layers)

    p = sub.add_parser("swap", help="does G follow the colour words? swap the named colour for a lookalike's "
                                    "(grounded variant, validation scenes)")
    p.add_argument("--model", default="tinyvla", help="a shipped model or a checkpoint directory")
    p.add_argument("--tasks", type=_csv, default="reach,push,pick-place", help="comma-separated task names")
    p.add_argument("--episodes", type=_positive, default=10, help="scenes per task (first frame of each)")
    p.add_argument("--seed", type=_non_negative, default=1, help="seed set (default 1, validation; 0 is the test set)")
    p.add_argument("--distractors", type=_non_negative, default=3, help="generic distractors per scene")
    p.add_argument("--palette", choices=("train", "ood"), default="train", help="colours and shapes of the split")
    p.add_argument("--lookalikes", type=_count_range, default=None, metavar="N|LO-HI",
                   help="lookalikes per scene (default: the split's, train 1-4, ood 3-6)")
    p.add_argument("--threads", type=_positive, default=1, help="torch threads")
    p.add_argument("--out", default=None, help="write a PNG of the first frames (image, G original, G swapped)")
    p.add_argument("--figure-frames", type=_positive, default=4, help="frames drawn in --out")
    p.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    _add_dtp_options(p)  # G's size, smoothing, source and layers (DTP itself stays off)
    p.set_defaults(func=cmd_swap)

    p = sub.add_parser("collect", help="scripted demonstrations to HDF5, resumable")
    p.add_argument("--out", default="data/demos", help="demonstration folder (one collection's settings per folder)")
    p.add_argument("--tasks", type=_csv, default=",".join(TASK_NAMES), help="comma-separated task names")
    p.add_argument("--episodes", type=_positive, default=120, help="successful episodes per task")
    p.add_argument("--seed", type=_non_negative, default=0, help="base seed (0-9) of the demonstration scenes")
    p.add_argument("--image-size", type=_positive, default=96, help="camera image size in pixels")
    p.add_argument("--max-distractors", type=_non_negative, default=3,
                   help="each episode shows 0 to this many distractors")
    p.add_argument("--palette", choices=("train", "ood"), default="train", help="distractor colours and shapes")
    _add_variant_option(p, lookalikes=False)
    p.add_argument("--workers", type=_positive, default=2, help="processes (1: in this process)")
    p.set_defaults(func=cmd_collect, on_interrupt=_demos_saved)

    p = sub.add_parser("train", help="train the TinyVLA on demonstrations (options: dtp train --help)",
                       add_help=False)
    p.add_argument("train_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_train, on_interrupt=_train_saved)

    p = sub.add_parser("serve", help="serve a DTP-wrapped policy over the openpi or vla-eval WebSocket protocol",
                       description="Serve until SIGTERM/Ctrl-C. DTP_SERVE_API_KEY (env) makes the openpi protocol "
                                   "require 'Authorization: Api-Key <key>'. See docs/serve.md.")
    p.add_argument("--model", default="tinyvla", help="a shipped model ('tinyvla', 'tinyvla-plain') or a checkpoint directory")
    p.add_argument("--model-arg", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
                   help="keyword for dtp.models.load, JSON-typed (e.g. unnorm_key=bridge_orig trust_remote_code=true)")
    p.add_argument("--protocol", choices=("openpi", "vla-eval"), required=True)
    p.add_argument("--host", default="127.0.0.1", help="bind address (default loopback; others need --allow-remote)")
    p.add_argument("--port", type=int, default=8000, help="port (0 picks a free one and prints it)")
    p.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --host (prints a warning)")
    p.add_argument("--diagnostics", action="store_true", help="add DTP's per-step diagnostics to every reply")
    p.add_argument("--no-dtp", action="store_true", help="serve the plain policy (one pass, the baseline)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    _add_dtp_options(p)
    p.set_defaults(func=cmd_serve)

    try:
        from .bench import add_bench_parser, run_bench_cli
    except ImportError:
        pass
    else:
        p = add_bench_parser(sub)
        p.set_defaults(func=run_bench_cli)
    return parser


def _setup_logging(verbose: bool) -> None:
    """dtp's own INFO lines always; third-party INFO (OpenGL, Ray, ...) only with -v."""
    level = logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(level)  # also when a host (e.g. pytest) configured logging first
    logging.getLogger("dtp").setLevel(logging.DEBUG if verbose else logging.INFO)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # `dtp train --flag ...`: argparse's REMAINDER misses options that come first, so the trainer's
    # options are whatever the top-level parser does not know
    args, unknown = parser.parse_known_args(argv)
    if args.command == "train":
        args.train_args = unknown + list(args.train_args)
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    _setup_logging(args.verbose)
    from .envs.errors import RenderBackendError

    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        note = getattr(args, "on_interrupt", None)
        try:
            text = note(args) if note else "interrupted"
        except Exception:  # the note is a courtesy; never a second traceback after Ctrl-C
            text = "interrupted"
        print(f"dtp {args.command}: {text}", file=sys.stderr)
        return 130
    except (DTPError, ValueError, OSError, RenderBackendError) as e:  # bad values, names, paths, no OpenGL
        if args.verbose:
            traceback.print_exc()
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"dtp {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
