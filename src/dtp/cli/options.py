"""What the commands share: the parser class, option types in the user's words, and option groups
with the function that maps each group onto the API (run options -> EvalSpec, DTP options -> DTPConfig).

Light at import (no torch, no simulator): `dtp --help` and argument errors build these parsers.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from ..envs.errors import UnknownTaskError
from ..envs.libero.names import is_libero, split_name
from ..envs.tasks import TASK_NAMES, get_task
from ..envs.variants import DEFAULT_VARIANT, VARIANTS
from ..errors import ConfigError, did_you_mean
from ..seeds import VALIDATION_SEED
from ..shipped import SHIPPED_MODELS, trained_variant, unknown_model_message

PALETTES = tuple(dict.fromkeys(split for v in VARIANTS.values() for split in v.splits))  # "train", "ood"
RAY_WORKERS = 2  # Ray workers when --workers is not given


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends '(default: X)' to every option whose default means something: not None (the help says
    what None means), not a plain flag's False (--json); --x/--no-x flags show theirs."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_ = action.help or ""
        plain_flag = action.default is False and not isinstance(action, argparse.BooleanOptionalAction)
        if action.default is None or plain_flag or not action.option_strings:
            return help_
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """Defaults in every --help; a usage mistake is one line pointing at --help, with the closest
    valid name when a choice or an option is mistyped."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def _check_value(self, action: argparse.Action, value) -> None:  # argparse's hook for `choices`
        if action.choices is not None and value not in action.choices:
            listed = ", ".join(map(repr, action.choices))
            raise argparse.ArgumentError(
                action, f"invalid choice: {value!r}{did_you_mean(value, action.choices)} (choose from {listed})")

    def unrecognized(self, words: list[str]) -> None:
        """Refuse words no option takes, suggesting the closest option of this parser for each."""
        options = [s for a in self._actions for s in a.option_strings]
        hints = "".join(did_you_mean(w.partition("=")[0], options) for w in words if w.startswith("-"))
        self.error(f"unrecognized arguments: {' '.join(words)}{hints}")


# -- option types: each says what it wants in the user's words -----------------------------
def int_at_least(lo: int, what: str = "a whole number"):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"must be >= {lo}, got {v}")
        return v

    return parse


positive = int_at_least(1)
non_negative = int_at_least(0)


def non_negative_number(not_a_number: str, negative: str):
    """A float option refusing NaN and negatives; the two messages say, in the option's words, what it wants."""
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{not_a_number}, got {text!r}") from None
        if math.isnan(v) or v < 0:
            raise argparse.ArgumentTypeError(f"{negative}, got {text!r}")
        return v

    return parse


tau = non_negative_number("tau must be a number or 'inf'", "tau must be >= 0 (inf prunes nothing)")
non_negative_float = non_negative_number("expected a number", "must be >= 0")


def k_size(text: str) -> int | float:
    try:
        return float(text) if any(c in text for c in ".eE") else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"k is a count of image tokens (e.g. 16) or a fraction of them with a dot (e.g. 0.25), got {text!r}"
        ) from None


def model(text: str) -> str:
    """A shipped model's name or an existing checkpoint folder, checked before anything loads."""
    if text in SHIPPED_MODELS or Path(text).exists():
        return text
    raise argparse.ArgumentTypeError(unknown_model_message(text))


def tasks(text: str) -> tuple[str, ...]:
    """Comma-separated task names, each known (the closest known name suggested otherwise). LIBERO
    names ("libero_object" for a suite, "libero_object/3" for one task) are checked for their form
    here and against the installed package when the run starts."""
    names = csv(text)
    try:
        for name in names:
            if is_libero(name):
                split_name(name)
            else:
                get_task(name)
    except (UnknownTaskError, ConfigError) as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return names


def csv(text: str) -> tuple[str, ...]:
    items = tuple(dict.fromkeys(x.strip() for x in text.split(",") if x.strip()))  # in order, once each
    if not items:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return items


def names(text: str) -> tuple[str, ...]:
    items = tuple(n.strip() for n in text.split(",") if n.strip())
    if not items:
        raise argparse.ArgumentTypeError("expected comma-separated config names, got none")
    return items


def key_value(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def taus(text: str) -> list[float]:
    return [tau(x) for x in csv(text)]


def layers(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in csv(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"layers are comma-separated layer numbers (e.g. 1,2), got {text!r}") from None


def steps(text: str) -> list[int]:
    try:
        return [int(x) for x in csv(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"steps are comma-separated step numbers (e.g. 0,10), got {text!r}") from None


def share(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a share in (0, 1], got {text!r}") from None
    if not 0.0 < v <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a share in (0, 1], got {text!r}")
    return v


def count_range(text: str) -> tuple[int, int]:
    lo, _, hi = text.partition("-")
    try:
        return (int(lo), int(hi or lo))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a count or a range LO-HI, got {text!r}") from None


def json_safe(value):
    """NaN/inf -> None, recursively, so json.dumps writes standard JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


# -- DTP options -> DTPConfig ------------------------------------------------------------------
def _dtp_options() -> dict[str, tuple[str, dict]]:
    """DTPConfig field -> (help, how argparse reads it), in the order --help lists them. The flag is the
    field's name (relevance_layers: --layers), the default DTPConfig's own (None leaves the field unset)."""
    from ..choices import AGGREGATIONS, REGION_SOURCES, ROBOT_MASK_SOURCES
    from ..config import RELEVANCE_MODES

    return {
        "tau": ("tolerance of the pruning rule: smaller prunes more, inf prunes nothing", {"type": tau}),
        "k": ("important-region size: a count of image tokens, or a fraction if it has a dot", {"type": k_size}),
        "sigma": ("Gaussian smoothing of relevance, in patches, 0 = off", {"type": non_negative_float}),
        "region": ("where the important region G comes from: attention, similarity, oracle (the simulator's "
                   "segmentation of task object, goal, gripper); mask takes the caller's mask with each observation "
                   "(the Python API's, not the benchmark's)", {"choices": REGION_SOURCES}),
        "relevance": ("old name of --region", {"choices": RELEVANCE_MODES}),
        "relevance_layers": ("relevance layers, comma-separated (default: the checkpoint's stored choice, else the "
                             "middle third; the run's config.json records the layers used)", {"type": layers}),
        "aggregation": ("how attention combines over the action tokens", {"choices": AGGREGATIONS}),
        "keep_robot": ("embodiment-aware G (our extension, not the paper's): add the robot's own patches to G "
                       "before the pruning rule, from the simulator's segmentation or from motion between frames",
                       {"choices": ROBOT_MASK_SOURCES}),
    }


def dtp_flag(field: str) -> str:
    return "--layers" if field == "relevance_layers" else "--" + field.replace("_", "-")


def add_dtp_options(p: argparse.ArgumentParser) -> None:
    """The DTP group: one option per DTPConfig field a user sets, generated from the dataclass."""
    from dataclasses import fields

    from ..config import DTPConfig

    defaults = DTPConfig()
    known = {f.name for f in fields(DTPConfig)}
    g = p.add_argument_group("DTP")
    for name, (help_, reads) in _dtp_options().items():
        assert name in known, f"DTPConfig has no field {name!r}"  # a renamed field must rename its option
        default = getattr(defaults, name)
        if default is not None and name != "relevance":  # the alias follows --region
            help_ = f"{help_} (default: {default:g})" if isinstance(default, float) else f"{help_} (default: {default})"
        flag = dtp_flag(name)
        metavar = None if "choices" in reads else flag[2:].upper()
        g.add_argument(flag, dest=name, default=None, help=help_, metavar=metavar, **reads)


def dtp_options_given(args: argparse.Namespace) -> list[str]:
    """The DTP flags the command line set."""
    return [dtp_flag(name) for name in _dtp_options() if getattr(args, name) is not None]


def dtp_config(args: argparse.Namespace):
    """The DTPConfig the DTP options describe (DTPConfig's defaults for those not given)."""
    from ..config import DTPConfig

    return DTPConfig(**{name: getattr(args, name) for name in _dtp_options() if getattr(args, name) is not None})


# -- run options (model, tasks, scenes) -> EvalSpec --------------------------------------------
# the EvalSpec fields the run options set (each option's dest is the field's name)
RUN_FIELDS = ("model", "tasks", "episodes", "seed", "distractors", "palette", "variant", "lookalikes", "max_steps")


def add_model_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=model, default="tinyvla",
                   help=f"a shipped model ({', '.join(SHIPPED_MODELS)}) or a checkpoint directory")


def add_run_options(p: argparse.ArgumentParser, *, episodes: int, model_variant: bool = False,
                    seed: int = 0) -> None:
    add_model_option(p)
    p.add_argument("--tasks", type=tasks, default=",".join(TASK_NAMES), help="comma-separated task names")
    p.add_argument("--episodes", type=positive, default=episodes, help="episodes per task and config")
    p.add_argument("--seed", type=non_negative, default=seed, help=seed_help(seed))
    p.add_argument("--distractors", type=non_negative, default=3, help="distractor objects per scene")
    p.add_argument("--palette", choices=PALETTES, default=PALETTES[0], help="distractor colours and shapes")
    add_variant_option(p, model_variant=model_variant)
    p.add_argument("--max-steps", type=positive, default=None, help="episode step limit (default: the env's)")


def run_fields(args: argparse.Namespace) -> dict:
    """The EvalSpec fields that the run options (and --threads) give: EvalSpec(configs=..., **run_fields(args))."""
    return {name: getattr(args, name) for name in (*RUN_FIELDS, "threads")}


def seed_help(default: int) -> str:
    what = "seed set: the same seed gives the same scenes"
    return f"{what} ({VALIDATION_SEED} holds the validation scenes; 0 the test scenes dtp eval reports)" \
        if default == VALIDATION_SEED else what


def add_variant_option(p: argparse.ArgumentParser, lookalikes: bool = True, model_variant: bool = False) -> None:
    trained = ", ".join(f"{name} {trained_variant(name)}" for name in SHIPPED_MODELS)
    what = ("benchmark variant: " + "; ".join(f"'{v.name}': {v.description}" for v in VARIANTS.values())
            + f" (what the shipped models were trained on: {trained})")
    if model_variant:  # dtp demo: show the model on its own benchmark
        p.add_argument("--variant", choices=tuple(VARIANTS), default=None,
                       help=f"{what} (default: the variant the model was trained on, which its checkpoint "
                            f"records; else {DEFAULT_VARIANT})")
    else:
        p.add_argument("--variant", choices=tuple(VARIANTS), default=DEFAULT_VARIANT,
                       help=f"{what} (default: %(default)s)")
    if lookalikes:
        p.add_argument("--lookalikes", type=count_range, default=None, metavar="N|LO-HI",
                       help=f"lookalikes per scene in the grounded variant (default: {lookalike_ranges()})")


def lookalike_ranges() -> str:
    """"the split's, train 1-4, ood 3-6": the grounded variant's ranges, as the help gives them."""
    splits = VARIANTS["grounded"].splits
    return "the split's, " + ", ".join(f"{name} {s.lookalikes[0]}-{s.lookalikes[1]}" for name, s in splits.items())


# -- runner options ------------------------------------------------------------------------------
def add_runner_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="run folder (rerun the same command to resume)")
    p.add_argument("--runner", choices=("local", "ray"), default="local", help="who runs the episodes")
    p.add_argument("--address", default=None, help="Ray cluster address (--runner ray only; default: a local Ray)")
    p.add_argument("--workers", type=positive, default=None,
                   help=f"Ray workers (--runner ray only; default: {RAY_WORKERS})")
    p.add_argument("--threads", type=positive, default=1, help="torch threads per runner process")
    p.add_argument("--batch", type=positive, default=1,
                   help="episodes each runner steps together, one batched policy call per config and step "
                        "(the same episodes as --batch 1; 1: one at a time)")
    p.add_argument("--env-processes", action="store_true",
                   help="with --batch > 1: step each env in its own process, in parallel with the other envs "
                        "and the model (the same episodes; about 1 s to start each env process)")
    p.add_argument("--only", type=names, default=None, metavar="CONFIGS",
                   help="run only these configs now, comma-separated (e.g. the headline ones first); "
                        "the rest stay to do and a rerun without --only completes the run")


def add_record_maps_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--record-maps", action="store_true",
                   help="keep each episode's camera frames and r, G, A, D per step in RUN/maps (about 0.5 MB an "
                        "episode of 150 steps at 96 px) for dtp view")


def add_region_scores_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-region-scores", action="store_true",
                   help="skip scoring G, A and D against the segmentation each step (one render fewer per step, "
                        "faster rollouts; dtp analyze leaves those columns empty)")


def runner_kwargs(args: argparse.Namespace) -> dict:
    """run_eval's runner arguments from the runner options (after check_runner_flags)."""
    return dict(runner=args.runner, address=args.address, workers=args.workers, batch=args.batch,
                env_processes=args.env_processes)


def check_runner_flags(args: argparse.Namespace) -> None:
    """--address/--workers only mean something with Ray: refuse them otherwise rather than ignore them."""
    given = [flag for flag, v in (("--address", args.address), ("--workers", args.workers)) if v is not None]
    if args.runner != "ray" and given:
        verb = "apply" if len(given) > 1 else "applies"
        raise ConfigError(f"{' and '.join(given)} only {verb} to --runner ray; add --runner ray or drop it")
    if args.workers is None:
        args.workers = RAY_WORKERS


def episodes_saved(run: Path) -> str:
    """What a Ctrl-C left in an eval run folder, in one line."""
    from ..eval.runner import EvalSpec
    from ..eval.store import CONFIG, RunStore

    if not (run / CONFIG).is_file():
        return "interrupted before any episode ran; nothing saved"
    store = RunStore(run)
    total = len(EvalSpec.from_dict(store.config()).jobs())
    return f"interrupted: {len(store.episodes())} of {total} episodes saved in {run}; rerun the same command to resume"
