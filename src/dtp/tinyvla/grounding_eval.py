"""Grounding accuracy of a TinyVLA checkpoint on a split of grounding frames, beside the baselines.

    dtp grounding-eval CHECKPOINT --data data/grounding [--split val] [--json]
    (or python -m dtp.tinyvla.grounding_eval with the same flags)

Prints accuracy per question kind on every question of DATA/SPLIT, the accuracy of always
giving each kind's most frequent answer in DATA/train (a model that ignores the image), and
uniform chance for pointing (1 / image tokens). Same numbers as the trainer's final validation.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import DTPError

__all__ = ["grounding_report", "add_arguments", "run", "main"]

DESCRIPTION = __doc__.splitlines()[0]


def grounding_report(checkpoint: str | Path, data: str | Path, split: str = "val") -> dict:
    """{"model": accuracies, "majority": baseline accuracies (when DATA/train exists), "uniform_point": 1/N}."""
    from .grounding_data import load_grounding
    from .modeling import TinyVLA
    from .tokenizer import load_tokenizer
    from .train.evaluation import evaluate_grounding, grounding_baselines

    model = TinyVLA.from_pretrained(checkpoint)
    tokenizer = load_tokenizer(checkpoint)
    size = model.config.image_size
    held = load_grounding(Path(data) / split, tokenizer, size)
    out = {"checkpoint": str(checkpoint), "data": str(Path(data) / split), "questions": len(held),
           "frames": held.n_frames, "model": evaluate_grounding(model, held, tokenizer),
           "uniform_point": 1 / model.config.num_image_tokens}
    if (Path(data) / "train").is_dir() and split != "train":
        out["majority"] = grounding_baselines(load_grounding(Path(data) / "train", tokenizer, size), held)
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """CHECKPOINT, --data DIR, --split, --threads, --json."""
    parser.add_argument("checkpoint", help="TinyVLA checkpoint folder")
    parser.add_argument("--data", required=True, help="folder with train/ and val/ shards")
    parser.add_argument("--split", default="val", help="the split scored")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    """The command on add_arguments' flags: the report as a table, or one JSON object. A checkpoint or
    frames that cannot be read raise their DTPError."""
    import torch

    torch.set_num_threads(args.threads)
    rep = grounding_report(args.checkpoint, args.data, args.split)
    if args.json:
        print(json.dumps(rep))
        return 0
    print(f"{rep['checkpoint']} on {rep['data']}: {rep['questions']} questions, {rep['frames']} frames")
    print(f"{'kind':<12} {'model':>7} {'majority':>9}")
    for key, acc in rep["model"].items():
        if key.startswith("g_acc"):
            kind = key[6:] or "all"
            base = rep.get("majority", {}).get(key)
            print(f"{kind:<12} {acc:7.3f} {'' if base is None else f'{base:9.3f}'}")
    print(f"pointing within one cell: {rep['model']['g_point_near']:.3f}; uniform chance of the exact cell: "
          f"{rep['uniform_point']:.3f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dtp.tinyvla.grounding_eval", description=DESCRIPTION)
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except DTPError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
