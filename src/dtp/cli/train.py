"""`dtp train`: train the TinyVLA on demonstrations (dtp.tinyvla.train)."""

from __future__ import annotations

import argparse

from .options import Parser

HELP = "train the TinyVLA on demonstrations (options: dtp train --help)"
ADD_HELP = False  # the trainer's own parser answers --help


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("train_args", nargs=argparse.REMAINDER)


def run(args: argparse.Namespace) -> int:
    from ..tinyvla.train import config_from_args, resume_if_same, train

    argv = list(args.train_args)
    cfg = resume_if_same(config_from_args(argv, prog="dtp train", parser_class=Parser))
    args.train_config = cfg  # for the Ctrl-C note
    print(train(cfg, command="dtp train " + " ".join(argv)))
    return 0


def on_interrupt(args: argparse.Namespace) -> str:
    from ..tinyvla.train import interrupted_note

    return interrupted_note(getattr(args, "train_config", None))
