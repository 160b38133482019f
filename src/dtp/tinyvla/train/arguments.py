"""The command line of training: flags generated from TrainConfig's fields, and the rules that make
rerunning a command resume its run (`python -m dtp.tinyvla.train`, `dtp train`). Importing it
loads neither torch nor transformers (the parser answers --help at once); running a command does.

A command parser of its own (`dtp train` as a subcommand) takes the flags with

    p = subparsers.add_parser("train", description=DESCRIPTION, formatter_class=HelpFormatter)
    add_arguments(p)
    ...
    cfg = resume_if_same(config_from_namespace(args))
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from dataclasses import fields, replace
from pathlib import Path

from ...config_diff import config_differences
from ...errors import ConfigError
from .config import TrainConfig
from .precision import PRECISIONS

__all__ = ["add_arguments", "config_from_namespace", "HelpFormatter", "DESCRIPTION", "build_parser",
           "config_from_args", "resume_if_same", "interrupted_note", "main"]

log = logging.getLogger(__name__)

_HELP = {
    "data_dir": "folder of demonstrations written by 'dtp collect'",
    "out_dir": "run folder: checkpoints, log, final model (rerun the same command to resume)",
    "steps": "optimizer steps",
    "batch_size": "samples (control steps) per batch",
    "lr": "peak learning rate",
    "min_lr_ratio": "the cosine ends at lr * this",
    "weight_decay": "AdamW weight decay of matrices and embeddings",
    "warmup": "linear warmup steps",
    "grad_clip": "gradient norm clip",
    "bin_sigma": "soft targets: std in bins of a Gaussian over neighbouring action bins (0: one-hot)",
    "seed": "seed of the model, batches, augmentation and validation split",
    "image_size": "model input size in pixels (demos are resized)",
    "patch_size": "vision patch size in pixels",
    "vision_width": "vision encoder width",
    "hidden_size": "language model width",
    "num_layers": "language model layers",
    "num_heads": "attention heads",
    "intermediate_size": "MLP width",
    "tasks": "comma-separated task names (default: every task folder in --data-dir)",
    "only_success": "train on successful demonstrations only",
    "val_fraction": "share of each task's episodes held out for validation",
    "max_shift": "random shift augmentation, in pixels",
    "color_jitter": "brightness/contrast jitter range (+-)",
    "normalize_proprio": "the model standardises proprio by the training demos' mean and std per dimension "
                         "(stored in its config; std floored at 0.01)",
    "log_every": "steps per log line",
    "eval_every": "steps between validation passes",
    "eval_samples": "validation steps per periodic pass (0: all)",
    "save_every": "steps between checkpoints (a multiple of --log-every)",
    "keep_checkpoints": "checkpoints kept",
    "resume": "continue the checkpoints in --out-dir even if the options changed (the same options resume anyway)",
    "threads": "torch threads (2 on a shared 2-core machine stalls)",
    "precision": "autocast dtype of the training forward pass ('auto': bf16 where the CPU computes it natively "
                 "(AVX512-BF16, AMX), else fp32; emulated bf16 is about 10x slower)",
    "progress": "progress bar",
    "stage": "'actions' (behaviour cloning, optionally mixed with grounding), 'grounding' (the VLM stage: "
             "answers to questions about simulator frames) or 'vision' (the image encoder alone on the frames' "
             "patch-word labels, before the VLM stage; docs/training.md)",
    "grounding_dir": "frames written by 'dtp grounding-data' (train/ and val/ inside); "
                     "needed by the grounding stage and --grounding-share (default: none)",
    "grounding_share": "share of the actions stage's batches that are grounding batches",
    "init_from": "start from this checkpoint: its architecture and tokenizer, the size options ignored "
                 "(default: a fresh model)",
    "num_registers": "register tokens after the image span (never image tokens, never pruned)",
    "image_dropout": "each action sample hides up to this share of its image tokens (mask, original positions)",
    "patch_word_weight": "weight of the dense patch-word loss on grounding batches: a linear head on each image "
                         "token predicts the colour/noun/shape words of the object in its patch (0: off)",
    "instruction_attention_weight": "weight of the instruction-attention loss on grounding batches: the attention of "
                                    "each frame's task instruction (half the time its colour-swapped twin) to the image "
                                    "is pulled toward the patches of the parts it names (0: off)",
    "instruction_attention_layers": "language-model layers whose instruction->image attention that loss trains",
}
_WARMUP_DEFAULT = TrainConfig.warmup
PROG = "python -m dtp.tinyvla.train"
DESCRIPTION = "Train TinyVLA on demonstrations (behaviour cloning)."


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends '(default: X)' except where the default is None (the help text says what None means)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        return action.help or "" if action.default is None else super()._get_help_string(action)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field (--batch-size for batch_size), its default the field's; --tasks
    takes names separated by commas or spaces. The parser should use HelpFormatter."""
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        help_ = _HELP.get(f.name, "")
        if f.name == "tasks":
            parser.add_argument(flag, nargs="+", type=_task_list, default=None, help=help_)
        elif f.name == "instruction_attention_layers":
            parser.add_argument(flag, nargs="+", type=int, default=f.default, help=help_)
        elif f.name == "warmup":
            parser.add_argument(flag, type=int, default=None,
                                help=f"{help_} (default: {_WARMUP_DEFAULT}, clipped to --steps minus 1 for shorter runs)")
        elif f.name == "precision":
            parser.add_argument(flag, choices=PRECISIONS, default=f.default, help=help_)
        elif f.type in ("bool", bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=help_)
        else:
            kind = {"int": int, "float": float, "str": str}.get(str(f.type), str)
            parser.add_argument(flag, type=kind, default=f.default, help=help_)


def config_from_namespace(args: argparse.Namespace) -> TrainConfig:
    """TrainConfig from flags parsed by add_arguments' parser (other attributes of args are ignored);
    a bad value is a ConfigError that names the flag."""
    ns = {f.name: getattr(args, f.name) for f in fields(TrainConfig)}
    if ns["tasks"] is not None:
        ns["tasks"] = tuple(t for group in ns["tasks"] for t in group)
    ns["instruction_attention_layers"] = tuple(ns["instruction_attention_layers"])
    if ns["warmup"] is None:  # the default warmup would not fit a short run: clip it
        ns["warmup"] = min(_WARMUP_DEFAULT, max(0, ns["steps"] - 1)) if isinstance(ns["steps"], int) else _WARMUP_DEFAULT
    try:
        return TrainConfig(**ns)
    except ConfigError as e:
        raise ConfigError(_as_flags(str(e))) from None


def build_parser(prog: str = PROG, parser_class=argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The whole training command line on a parser of its own."""
    parser = parser_class(prog=prog, description=DESCRIPTION, formatter_class=HelpFormatter)
    add_arguments(parser)
    return parser


_parser = build_parser  # the name tests/cli/test_cli_train.py imports


def config_from_args(argv: list[str] | None = None, prog: str = PROG,
                     parser_class=argparse.ArgumentParser) -> TrainConfig:
    """TrainConfig from command-line words; --tasks takes names separated by commas or spaces."""
    return config_from_namespace(build_parser(prog, parser_class).parse_args(argv))


def _task_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _as_flags(message: str) -> str:
    """A TrainConfig message in command-line words: 'batch_size' -> '--batch-size'."""
    message = message.removeprefix("TrainConfig: ")
    names = sorted((f.name for f in fields(TrainConfig)), key=len, reverse=True)
    return re.sub(r"\b(" + "|".join(names) + r")\b", lambda m: "--" + m.group(1).replace("_", "-"), message)


def resume_if_same(cfg: TrainConfig) -> TrainConfig:
    """Rerunning the command of an interrupted run resumes it, as `dtp eval` does.

    out_dir holds checkpoints: the same options (apart from --resume/--progress) continue
    them; other options are refused, naming what differs, unless --resume says to continue anyway.
    """
    from .checkpoint import checkpoints  # torch: only once a command runs

    out = Path(cfg.out_dir)
    if cfg.resume or not checkpoints(out):
        return cfg
    stored_path = out / "train_config.json"
    ignore = {"resume", "progress"}
    stored = json.loads(stored_path.read_text()) if stored_path.is_file() else {}
    if stored:  # an option added since the run started counts as its default
        stored = {**TrainConfig().to_json(), **stored}
    old = {k: v for k, v in stored.items() if k not in ignore}
    new = {k: v for k, v in cfg.to_json().items() if k not in ignore}
    if old != new:
        diffs = config_differences(old, new)
        raise ConfigError(
            f"{out} holds checkpoints of a different training run ({'; '.join(_as_flags(d) for d in diffs[:6])}). "
            "Rerun with its options to resume it, add --resume to continue it with these options, "
            "or choose another --out-dir"
        )
    log.info("resuming the run in %s from %s", out, checkpoints(out)[-1].name)
    return replace(cfg, resume=True)


def interrupted_note(cfg: TrainConfig | None) -> str:
    """What a Ctrl-C left behind, in one line."""
    from .checkpoint import saved_step

    if cfg is None:
        return "interrupted"
    step = saved_step(cfg.out_dir)
    if step == 0:
        return (f"interrupted before the first checkpoint (one every {cfg.save_every} steps): nothing saved; "
                "rerun the same command to start again")
    return (f"interrupted: checkpoint at step {step} of {cfg.steps} saved "
            f"(one every {cfg.save_every} steps); rerun the same command to resume")


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    """The command: parse, resume if the same, train; 2 on a ConfigError, 130 on Ctrl-C."""
    from .loop import train

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    argv = sys.argv[1:] if argv is None else argv
    cfg = None
    try:
        cfg = resume_if_same(config_from_args(argv, prog))
        final = train(cfg, command=f"{prog} " + " ".join(argv))
    except ConfigError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: {interrupted_note(cfg)}", file=sys.stderr)
        return 130
    print(final)
    return 0
