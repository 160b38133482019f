"""`dtp layers`: choose relevance layers on validation scenes by G's coverage of the task objects."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import ConfigError
from . import options as o

HELP = "choose relevance layers on validation scenes by G's coverage of the task objects"


def add_arguments(p: argparse.ArgumentParser) -> None:
    o.add_run_options(p, episodes=2, seed=o.VALIDATION_SEED)  # choices are made on validation scenes
    p.add_argument("--threads", type=o.positive, default=1, help="torch threads")
    p.add_argument("--out", default=None, help="write the coverage table as JSON here")
    p.add_argument("--relevance", choices=("attention", "similarity"), default="attention",
                   help="relevance mode whose layers are chosen")
    p.add_argument("--write", action="store_true",
                   help="store the best layers as the default of the --model checkpoint (attention mode only)")
    p.add_argument("--force", action="store_true", help="let --write change the model installed with dtp")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (coverage per candidate layer set, per task, and the chosen one) "
                        "on the last line")


def _write_target(args: argparse.Namespace) -> Path | None:
    """The checkpoint --write would change, checked before any rollout: writable, and the shipped one only with --force."""
    import os

    from ..models import SHIPPED_MODELS, shipped_model_path

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


def run(args: argparse.Namespace) -> int:
    from ..demo import torch_threads
    from ..envs.benchmark import benchmark_env
    from ..eval.preflight import check_tasks, check_writable_dir, declared_image_size
    from ..eval.runner import EvalSpec
    from ..experiments.layer_choice import choose_layers, format_layer_choice
    from ..models import load

    target = _write_target(args)
    if args.out:
        out = Path(args.out)
        if out.is_dir():
            raise ConfigError(f"--out {out} is a folder; name a JSON file")
        check_writable_dir(out.parent, "folder of --out")
    tasks = check_tasks(args.tasks)  # a LIBERO suite becomes its tasks
    adapter = load(args.model)
    image_size = declared_image_size(adapter) or EvalSpec.image_size
    if args.seed == 0:
        print("WARNING: seed set 0 holds the test scenes that dtp eval reports; choose layers on another set")

    def env_for(task: str):
        return benchmark_env(task, distractors=args.distractors, palette=args.palette,
                             image_size=image_size, max_steps=args.max_steps, variant=args.variant,
                             lookalikes=args.lookalikes)

    with torch_threads(args.threads):
        choice = choose_layers(adapter, env_for, list(tasks), episodes=args.episodes, seed=args.seed,
                               relevance=args.relevance, progress=not args.json)
    print(format_layer_choice(choice, list(tasks)))
    chosen = next(n for n, layers in choice.candidates.items() if layers == choice.best)
    result = {"model": str(args.model), "tasks": list(tasks), **_scene_options(args, tasks),
              "max_steps": args.max_steps, **choice.to_dict(),
              "chosen": {"name": chosen, "layers": list(choice.best), "coverage": choice.coverage[chosen]}}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))
        print(f"written: {args.out}")
    if target is not None:
        from ..tinyvla.modeling import write_default_relevance_layers

        path = write_default_relevance_layers(target, choice.best)
        print(f"default relevance layers {list(choice.best)} stored in {path}")
    if args.json:  # last line: one JSON object (NaN -> null) so the figure can be checked by a command
        print(json.dumps(o.json_safe(result)))
    return 0


def _scene_options(args: argparse.Namespace, tasks: tuple[str, ...]) -> dict:
    """The scene options the run used: Meta-World's clutter settings where a task is Meta-World's; none
    for LIBERO tasks, whose suite fixes the scene (benchmark_env ignores those options there)."""
    from ..envs.libero.names import is_libero

    if all(is_libero(t) for t in tasks):
        return {"benchmark": "libero"}
    return {"distractors": args.distractors, "palette": args.palette, "variant": args.variant,
            "lookalikes": args.lookalikes}
