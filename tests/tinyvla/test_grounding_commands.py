"""The grounding jobs' flags go onto any parser (a `dtp` subcommand's too) and import without torch."""

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dtp.errors import CheckpointError, ConfigError
from dtp.tinyvla import grounding, grounding_eval
from dtp.tinyvla.grounding import GroundingGenConfig

SRC = str(Path(__file__).resolve().parents[2] / "src")


def _subcommand(add_arguments) -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="dtp")
    top.add_argument("-v", "--verbose", action="store_true")
    add_arguments(top.add_subparsers(dest="command").add_parser("job"))
    return top


def test_grounding_flags_give_the_config_they_name():
    top = _subcommand(grounding.add_arguments)
    assert grounding.config_from_namespace(top.parse_args(["job"])) == GroundingGenConfig()
    args = top.parse_args(["-v", "job", "--split", "val", "--frames", "7", "--tasks", "push", "reach",
                           "--max-distractors", "2", "--image-size", "48", "--patch-size", "8", "--variant", "grounded"])
    assert grounding.config_from_namespace(args) == GroundingGenConfig(
        split="val", frames=7, tasks=("push", "reach"), max_distractors=2, image_size=48, patch_size=8,
        variant="grounded")
    with pytest.raises(ConfigError, match="frames must be a positive integer, got 0"):
        grounding.config_from_namespace(top.parse_args(["job", "--frames", "0"]))


def test_grounding_command_reports_a_bad_value_in_one_line_before_any_work(tmp_path, capsys):
    assert grounding.main(["--out", str(tmp_path / "g"), "--frames", "0"]) == 2
    err = capsys.readouterr().err
    assert err == "error: frames must be a positive integer, got 0\n" and not (tmp_path / "g").exists()


def test_grounding_eval_flags_and_a_missing_checkpoint(tmp_path):
    args = _subcommand(grounding_eval.add_arguments).parse_args(
        ["job", str(tmp_path / "none"), "--data", str(tmp_path), "--json"])
    assert (args.checkpoint, args.data, args.split, args.threads, args.json) == (str(tmp_path / "none"), str(tmp_path),
                                                                                 "val", 1, True)
    with pytest.raises(CheckpointError, match="not a TinyVLA checkpoint"):
        grounding_eval.run(args)  # the typed error reaches the caller; main turns it into one line


def test_the_grounding_flags_import_without_torch():
    code = ("import sys, argparse\n"
            "from dtp.tinyvla import grounding, grounding_eval\n"
            "for job in (grounding, grounding_eval):\n"
            "    p = argparse.ArgumentParser(); job.add_arguments(p); p.format_help()\n"
            "print(sorted(m for m in ('torch', 'transformers', 'mujoco', 'metaworld') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": SRC})
    assert out.stdout.strip() == "[]"
