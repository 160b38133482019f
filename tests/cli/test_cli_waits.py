"""Issue 14, item 5: no silent waits. `show` and demo's heatmaps pin torch threads and show progress,
third-party INFO logs stay quiet unless -v, and a repeated `show` leaves no stale frames."""

import logging
from pathlib import Path

import torch

from dtp import policy as dtp_policy
from dtp.eval import episode as eval_episode

from cli_helpers import FAST


def _record_threads(monkeypatch, module, name):
    seen = []
    original = getattr(module, name)

    def wrapped(*a, **k):
        seen.append(torch.get_num_threads())
        return original(*a, **k)

    monkeypatch.setattr(module, name, wrapped)
    return seen


def test_show_pins_threads_shows_progress_and_leaves_no_stale_frames(dtp, tiny_checkpoint, tmp_path, monkeypatch):
    run = tmp_path / "run"
    assert dtp("eval", "--model", tiny_checkpoint, *FAST, "--max-steps", "3", "--out", run)[0] == 0
    seen = _record_threads(monkeypatch, eval_episode, "run_episode")
    torch.set_num_threads(2)
    try:
        code, text, err = dtp("show", run, "--steps", "0,2", "--threads", "1")
        assert code == 0 and seen == [1] and torch.get_num_threads() == 2  # pinned inside, restored after
    finally:
        torch.set_num_threads(1)
    assert "replaying dtp|push|" in err
    show = run / "show"
    assert {p.name for p in show.iterdir()} == {"step_000.png", "step_002.png", "rollout_strip.png"}
    assert dtp("show", run, "--steps", "1")[0] == 0
    assert {p.name for p in show.iterdir()} == {"step_001.png", "rollout_strip.png"}


def test_demo_heatmaps_pin_threads_and_show_progress(dtp, tmp_path, monkeypatch):
    seen = _record_threads(monkeypatch, dtp_policy.DTPPolicy, "step")
    torch.set_num_threads(2)
    try:
        code, _, err = dtp("demo", "--tasks", "reach", "--episodes", "1", "--max-steps", "2", "--out", tmp_path / "d")
    finally:
        torch.set_num_threads(1)
    assert code == 0 and seen and set(seen) == {1}  # episodes and heatmap steps alike
    assert "heatmaps" in err


def test_third_party_info_logs_only_with_verbose(dtp, tmp_path):
    dtp("show", tmp_path / "nothere")
    assert logging.getLogger("OpenGL.acceleratesupport").getEffectiveLevel() == logging.WARNING
    assert logging.getLogger("dtp.eval.runner").getEffectiveLevel() == logging.INFO
    dtp("-v", "show", tmp_path / "nothere")
    assert logging.getLogger("OpenGL.acceleratesupport").getEffectiveLevel() == logging.INFO
    assert logging.getLogger("dtp.eval.runner").getEffectiveLevel() == logging.DEBUG
    dtp("show", tmp_path / "nothere")  # back to quiet for the tests after this one


def test_demo_output_folder_is_ignored_by_git():
    ignore = (Path(__file__).resolve().parents[2] / ".gitignore").read_text().split()
    assert "dtp-demo/" in ignore
