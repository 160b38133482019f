"""`dtp grounding-data`: grounding frames with questions answered from the simulator (dtp.tinyvla.grounding)."""

from __future__ import annotations

import argparse

HELP = "grounding frames: benchmark scenes with questions answered from the simulator, resumable"
DESCRIPTION = ("Generate grounding frames with ground-truth questions and answers (the VLM stage's data, "
               "docs/training.md). A rerun of the same command skips finished shards.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..tinyvla import grounding

    grounding.add_arguments(p)  # the flags live beside the generator they configure


def run(args: argparse.Namespace) -> int:
    from ..tinyvla import grounding

    return grounding.run(grounding.config_from_namespace(args))
