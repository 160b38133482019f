"""`dtp train`: train the TinyVLA on demonstrations (dtp.tinyvla.train)."""

from __future__ import annotations

import argparse

HELP = "train the TinyVLA on demonstrations; rerun the same command to resume"
DESCRIPTION = ("Train TinyVLA on demonstrations (behaviour cloning), optionally after or mixed with the "
               "grounding and vision stages (docs/training.md).")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..tinyvla.train.arguments import add_arguments as add_training_flags

    add_training_flags(p)  # one flag per TrainConfig field, generated beside TrainConfig


def run(args: argparse.Namespace) -> int:
    from ..tinyvla.train import train
    from ..tinyvla.train.arguments import config_from_namespace, resume_if_same

    cfg = resume_if_same(config_from_namespace(args))
    args.train_config = cfg  # for the Ctrl-C note
    print(train(cfg, command=" ".join(["dtp", *args.argv])))
    return 0


def on_interrupt(args: argparse.Namespace) -> str:
    from ..tinyvla.train.arguments import interrupted_note

    return interrupted_note(getattr(args, "train_config", None))
