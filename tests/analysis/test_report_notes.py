"""The report says why a region cell is empty and which command fills it (issue 24, item 3), and the
demo's own run fills them."""

from __future__ import annotations

import math
import re

import pytest

from dtp.analysis.empty_cells import NOTES, empty_reason
from dtp.analysis.report import write_report
from dtp.eval.runner import EvalSpec
from dtp.eval.store import RunStore, episode_key

COLUMNS = ["task_pruned_share_of_firings", "g_covers_task", "g_covers_object", "d_covers_distractors",
           "d_covers_lookalikes"]


def make_run(path, *, scores: dict | None = None, **spec_kw) -> dict:
    """A run folder with one reach scene under baseline and DTP, DTP firing on both of its two steps."""
    spec = EvalSpec(tasks=("reach",), episodes=1, **spec_kw)
    store = RunStore(path).open(spec.to_dict())
    for config, fired in (("baseline", False), ("dtp", True)):
        key = episode_key(config, "reach", 1_000_000)
        steps = [{"step": t, "config": config, "task": "reach", "seed": 1_000_000, "t_norm": t, "fired": fired,
                  "n_pruned": 2 if fired else 0, "margin": 0.1, "action_changed": fired, "action_l2": 0.1,
                  "entropy": 1.0, "irrelevant_fraction": 0.5, "tau": 1.0 if fired else None,
                  **((scores or {}) if fired or spec.observe else {})} for t in range(2)]
        store.append({"key": key, "config": config, "task": "reach", "seed": 1_000_000, "success": fired,
                      "length": 2, "mean_irrelevant_fraction": 0.5}, steps)
    return spec.to_dict()


def diagnostics(report: str) -> dict[str, list[str]]:
    """config -> its region cells (the last five columns) of the diagnostics table."""
    table = report.split("## Diagnostics per config")[1]
    rows = [line.strip("|").split("|") for line in table.splitlines() if line.startswith("| baseline") or line.startswith("| dtp")]
    return {r[0].strip(): [c.strip() for c in r[-5:]] for r in rows}


def notes(report: str) -> dict[str, str]:
    """letter -> note, from the list under "Empty cells:"."""
    block = report.split("Empty cells:\n\n")[1].split("\n\n")[0]
    return {line[3]: line[6:] for line in block.splitlines()}


def test_a_demo_style_run_without_scores_says_why_and_how(tmp_path):
    make_run(tmp_path / "run", observe=False, score_regions=False, variant="grounded")
    report = write_report(tmp_path / "run").read_text()
    cells, said = diagnostics(report), notes(report)
    letter = {text: k for k, text in said.items()}
    a, b, c = letter[NOTES["prunes_nothing"] + "."], letter[NOTES["no_capture"] + "."], letter[NOTES["not_scored"] + "."]
    assert cells["baseline"] == [f"- ({a})", f"- ({b})", f"- ({b})", f"- ({a})", f"- ({a})"]
    assert cells["dtp"] == [f"- ({c})"] * 5  # before: "0.0%" firings pruning a task patch, from nothing scored
    assert "`dtp eval --out RUN`" in said[c]
    assert "Configs with DTP off ran without capture" in report


def test_a_scored_run_shows_numbers_and_names_what_the_scene_lacked(tmp_path):
    scores = {"g_covers_task": 0.75, "g_covers_object": 1.0, "d_covers_distractors": 0.25, "d_on_task": 0,
              "gt_task_patches": 4, "gt_object_patches": 1, "gt_distractor_patches": 4, "gt_lookalike_patches": 0}
    make_run(tmp_path / "run", variant="plain", scores=scores)
    report = write_report(tmp_path / "run").read_text()
    cells, said = diagnostics(report), notes(report)
    assert cells["dtp"][:4] == ["0.0%", "75.0%", "100.0%", "25.0%"]
    (letter,) = [k for k, text in said.items() if text == NOTES["no_lookalikes"] + "."]
    assert cells["dtp"][4] == f"- ({letter})"


@pytest.mark.parametrize("column,config,run,steps,reason", [
    ("d_covers_distractors", "baseline", {"configs": {"baseline": {"enabled": False}}}, [], "prunes_nothing"),
    ("g_covers_task", "baseline", {"configs": {"baseline": {"enabled": False}}, "observe": False}, [], "no_capture"),
    ("g_covers_task", "baseline", {"configs": {"baseline": {"enabled": False}}, "observe": True,
                                   "score_regions": False}, [], "not_scored"),
    ("task_pruned_share_of_firings", "dtp", {"configs": {"dtp": {}}}, [{"fired": False}], "never_fired"),
    ("d_covers_distractors", "dtp", {"configs": {"dtp": {}}, "distractors": 0, "variant": "plain"},
     [{"fired": True, "d_covers_distractors": None, "gt_lookalike_patches": 0}], "no_distractors"),
    ("d_covers_lookalikes", "dtp", {"configs": {"dtp": {}}, "variant": "grounded", "lookalikes": [0, 0]},
     [{"d_covers_lookalikes": None}], "no_lookalikes"),
    ("g_covers_object", "dtp", {"configs": {"dtp": {}}}, [{"g_covers_task": 0.5}], "older_run"),
    ("g_covers_object", "dtp", {"configs": {"dtp": {}}}, [{"g_covers_object": None}], "not_visible"),
    ("fired_share", "dtp", {"configs": {"dtp": {}}}, [], None),
    ("action_changed_share_when_fired", "baseline", {"configs": {"baseline": {"enabled": False}}}, [], "prunes_nothing"),
    ("near_threshold_share_of_firings", "dtp", {"configs": {"dtp": {}}}, [{"fired": False}], "never_fired"),
    ("mean_action_l2_when_fired", "dtp", {"configs": {"dtp": {}}}, [{"fired": True}], None),
])
def test_each_reason(column, config, run, steps, reason):
    assert empty_reason(column, config, run, steps) == reason


@pytest.mark.slow
def test_the_demos_report_scores_regions(tmp_path):
    from dtp.demo import run_demo

    run_demo(tasks=("push",), episodes=1, max_steps=6, tau=0.25, out_dir=tmp_path, progress=False)
    cells = diagnostics(write_report(tmp_path / "run").read_text())
    assert not any(c.startswith("-") for c in cells["dtp"][1:3]), cells  # G covers task / named object: numbers
    assert all(re.fullmatch(r"\d+\.\d%", c) for c in cells["dtp"][1:3])
    steps = RunStore(tmp_path / "run").steps()
    assert any(s.get("gt_distractor_patches") for s in steps)  # distractors were scored
    assert all(math.isfinite(s["g_covers_task"]) for s in steps if s["config"] == "dtp" and s.get("gt_task_patches"))
