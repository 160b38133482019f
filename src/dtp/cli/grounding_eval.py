"""`dtp grounding-eval`: grounding accuracy of a TinyVLA checkpoint beside the baselines (dtp.tinyvla.grounding_eval)."""

from __future__ import annotations

import argparse

HELP = "grounding accuracy of a TinyVLA checkpoint on a split of grounding frames, beside the baselines"
DESCRIPTION = ("Accuracy per question kind on every question of DATA/SPLIT, the accuracy of always giving each "
               "kind's most frequent answer in DATA/train (a model that ignores the image), and uniform chance "
               "for pointing. Same numbers as the trainer's final validation.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..tinyvla import grounding_eval

    grounding_eval.add_arguments(p)  # the flags live beside the report they configure


def run(args: argparse.Namespace) -> int:
    from ..tinyvla import grounding_eval

    return grounding_eval.run(args)
