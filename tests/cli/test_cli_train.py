"""Issue 14, item 4: `dtp train` like the other commands: full --help under its own name,
comma-separated --tasks, tiny --steps, and a rerun after Ctrl-C resumes."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

import h5py
import numpy as np
import pytest

from dtp.tinyvla.train import TrainConfig, _parser, config_from_args, interrupted_note, saved_step, train

SRC = str(Path(__file__).resolve().parents[2] / "src")
TINY = ["--image-size", "48", "--patch-size", "8", "--vision-width", "32", "--hidden-size", "32", "--num-layers", "2",
        "--num-heads", "2", "--intermediate-size", "64", "--batch-size", "4", "--no-progress"]


@pytest.fixture()
def demos(tmp_path) -> Path:
    """Two tasks x 2 episodes x 5 steps of random frames, in the layout `dtp collect` writes."""
    rng = np.random.default_rng(0)
    root = tmp_path / "demos"
    for t, (task, text) in enumerate({"reach": "reach the red ball", "push": "push the puck to the goal"}.items()):
        (root / task).mkdir(parents=True)
        for e in range(2):
            with h5py.File(root / task / f"ep_{10 * t + e:06d}.h5", "w") as f:
                f["images"] = rng.integers(0, 256, (5, 48, 48, 3), dtype=np.uint8)
                f["proprio"] = rng.normal(size=(5, 4)).astype(np.float32)
                f["actions"] = rng.uniform(-1, 1, (5, 4)).astype(np.float32)
                f.attrs.update(task=task, instruction=text, seed=10 * t + e, success=True, n_steps=5)
    return root


def test_help_names_dtp_train_and_shows_every_option_with_help_and_default(dtp, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")
    code, text, _ = dtp("train", "--help")
    assert code == 0 and text.startswith("usage: dtp train")
    parser = _parser("dtp train")
    fmt = parser._get_formatter()
    options = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    assert len(options) == len(fields(TrainConfig))
    for action in options:
        shown = fmt._get_help_string(action) % {"default": action.default}
        assert action.help and action.option_strings[0] in text, action.option_strings
        assert "default" in shown, action.option_strings  # tasks and warmup say theirs in words
    assert "clipped to --steps minus 1" in " ".join(text.split())


def test_comma_separated_tasks_and_a_tiny_step_count(dtp, demos, tmp_path):
    out = tmp_path / "train"
    code, text, _ = dtp("train", "--data-dir", demos, "--out-dir", out, "--steps", "2", "--tasks", "reach,push", *TINY)
    assert code == 0 and text.strip().endswith(str(out / "final"))
    summary = json.loads((out / "final" / "training.json").read_text())
    assert summary["data"]["tasks"] == ["push", "reach"]
    assert summary["config"]["warmup"] == 1  # the default 100 clipped to steps - 1
    assert config_from_args(["--tasks", "reach", "push,drawer-open"]).tasks == ("reach", "push", "drawer-open")


def test_bad_values_use_flag_names(dtp, demos, tmp_path):
    code, _, err = dtp("train", "--data-dir", demos, "--out-dir", tmp_path / "t", "--steps", "0")
    assert code == 2 and "dtp train: error: --steps must be a positive integer, got 0" in err
    assert "TrainConfig" not in err and not (tmp_path / "t").exists()
    code, _, err = dtp("train", "--data-dir", tmp_path / "nothing", "--out-dir", tmp_path / "t")
    assert code == 2 and "dtp train: error: " in err and not (tmp_path / "t").exists()


def test_rerunning_the_same_command_resumes(dtp, demos, tmp_path):
    args = ["--data-dir", demos, "--steps", "8", "--log-every", "2", "--save-every", "2", "--seed", "3", *TINY]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert dtp("train", "--out-dir", straight, *args)[0] == 0
    cfg = config_from_args([str(a) for a in ["--out-dir", split, *args]])
    train(cfg, stop_at=4)  # left off at step 4, as a Ctrl-C after that checkpoint leaves it
    code, _, err = dtp("train", "--out-dir", split, *args, "--lr", "0.002")
    assert code == 2 and "--lr: 0.001 in the folder, 0.002 now" in err and "--resume" in err
    assert dtp("train", "--out-dir", split, *args)[0] == 0  # the same command: resumes, no --resume needed
    logs = [[{k: v for k, v in json.loads(l).items() if k != "seconds"} for l in (d / "train_log.jsonl").read_text().splitlines()]
            for d in (straight, split)]
    assert logs[0] == logs[1]


def test_ctrl_c_in_train_says_which_step_was_saved(demos, tmp_path):
    out = tmp_path / "train"
    cmd = [sys.executable, "-m", "dtp.cli", "train", "--data-dir", str(demos), "--out-dir", str(out),
           "--steps", "100000", "--log-every", "1", "--save-every", "2", *TINY]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": SRC}, start_new_session=True)
    deadline = time.time() + 240
    while saved_step(out) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err
    assert err.rstrip("\n").split("\n")[-1] == (
        f"dtp train: interrupted: checkpoint at step {saved_step(out)} of 100000 saved (one every 2 steps); "
        "rerun the same command to resume")


def test_ctrl_c_before_the_first_checkpoint_says_nothing_was_saved(tmp_path):
    note = interrupted_note(config_from_args(["--out-dir", str(tmp_path / "t"), "--save-every", "400"]))
    assert note == ("interrupted before the first checkpoint (one every 400 steps): nothing saved; "
                    "rerun the same command to start again")


def test_the_flags_go_onto_a_subcommand_parser_and_give_the_same_config():
    """add_arguments on a subcommand's parser (as a `dtp` with one module per command builds it) parses
    to the TrainConfig config_from_args gives; the namespace's other attributes are ignored."""
    import argparse

    from dtp.errors import ConfigError
    from dtp.tinyvla.train.arguments import HelpFormatter, add_arguments, config_from_namespace

    top = argparse.ArgumentParser(prog="dtp")
    top.add_argument("-v", "--verbose", action="store_true")
    add_arguments(top.add_subparsers(dest="command").add_parser("train", formatter_class=HelpFormatter))
    words = ["--steps", "7", "--tasks", "reach,push", "drawer-open", "--instruction-attention-layers", "0", "1",
             "--no-only-success", "--lr", "0.002"]
    cfg = config_from_namespace(top.parse_args(["-v", "train", *words]))
    assert cfg == config_from_args(words)
    assert cfg.tasks == ("reach", "push", "drawer-open") and cfg.instruction_attention_layers == (0, 1)
    assert cfg.warmup == 6 and cfg.only_success is False and cfg.lr == 0.002
    with pytest.raises(ConfigError, match="^--steps must be a positive integer, got 0$"):
        config_from_namespace(top.parse_args(["train", "--steps", "0"]))


def test_the_flags_import_without_torch():
    """A command line can build the training parser and its help without loading torch or transformers."""
    code = ("import sys\n"
            "from dtp.tinyvla.train.arguments import build_parser, config_from_args\n"
            "build_parser().format_help(); config_from_args(['--steps', '5'])\n"
            "print(sorted(m for m in ('torch', 'transformers', 'safetensors') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": SRC})
    assert out.stdout.strip() == "[]"
