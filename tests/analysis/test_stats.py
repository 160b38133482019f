"""Statistics against values worked out by hand or by definition."""

import math

import pytest

from dtp.analysis import stats


def test_wilson_known_values():
    lo, hi = stats.wilson_interval(0, 10)
    assert lo == 0.0 and math.isclose(hi, 0.2775, abs_tol=1e-4)
    lo, hi = stats.wilson_interval(5, 10)
    assert math.isclose(lo, 0.2366, abs_tol=1e-4) and math.isclose(hi, 0.7634, abs_tol=1e-4)
    assert all(math.isnan(x) for x in stats.wilson_interval(0, 0))


def test_mcnemar_exact():
    # 6 discordant pairs all favouring b: p = 2 * 0.5**6
    pairs = [(False, True)] * 6 + [(True, True)] * 4
    m = stats.mcnemar(pairs)
    assert m["b_only"] == 6 and m["a_only"] == 0 and math.isclose(m["p_value"], 2 * 0.5**6)
    assert stats.mcnemar([(True, True)])["p_value"] == 1.0


def test_mann_whitney_separates_clear_groups():
    r = stats.mann_whitney_fail_vs_success([0.9, 0.8, 0.85, 0.95], [0.1, 0.2, 0.15, 0.05])
    assert r["U"] == 16 and r["p_greater"] < 0.05
    r = stats.mann_whitney_fail_vs_success([0.1, 0.2], [0.9, 0.8])
    assert r["p_greater"] > 0.5


def test_relative_improvement():
    assert math.isclose(stats.relative_improvement(0.292, 0.375), 0.2842, abs_tol=1e-3)  # the paper's SpatialVLA row
    assert math.isnan(stats.relative_improvement(0.0, 0.5))


def test_time_curve_bins_by_outcome():
    steps = [{"key": "a", "t_norm": 0.0, "x": 1.0}, {"key": "a", "t_norm": 1.0, "x": 3.0},
             {"key": "b", "t_norm": 0.5, "x": 5.0}]
    tc = stats.time_curve(steps, {"a": True, "b": False}, value="x", bins=2)
    assert tc["success"] == [1.0, 3.0]
    assert math.isnan(tc["failure"][0]) and tc["failure"][1] == 5.0


def test_paired_outcomes_only_common_seeds():
    eps = [{"config": "baseline", "task": "t", "seed": 1, "success": False},
           {"config": "dtp", "task": "t", "seed": 1, "success": True},
           {"config": "dtp", "task": "t", "seed": 2, "success": True}]
    assert stats.paired_outcomes(eps, "baseline", "dtp") == [(False, True)]


def test_step_diagnostics_known_answer():
    from dtp.analysis.stats import step_diagnostics

    steps = [
        {"fired": True, "n_pruned": 2, "margin": 0.01, "action_changed": True, "action_l2": 0.5, "entropy": 1.0,
         "d_on_task": 1.0, "g_covers_task": 0.5, "d_covers_distractors": 1.0, "d_covers_lookalikes": 0.25},
        {"fired": True, "n_pruned": 4, "margin": 0.30, "action_changed": False, "action_l2": 0.0, "entropy": 2.0,
         "d_on_task": 0.0, "g_covers_task": 1.0, "d_covers_distractors": float("nan")},
        {"fired": False, "n_pruned": 0, "margin": -0.2, "action_changed": False, "action_l2": 0.0, "entropy": 3.0,
         "d_on_task": 0.0, "g_covers_task": 0.0, "d_covers_distractors": 0.0},
        {"fired": False, "n_pruned": 0, "margin": -0.5, "action_changed": False, "entropy": 4.0},
    ]
    d = step_diagnostics(steps)
    assert d["steps"] == 4 and d["fired_share"] == 0.5
    assert d["mean_pruned_when_fired"] == 3.0
    assert d["near_threshold_share_of_firings"] == 0.5
    assert d["action_changed_share"] == 0.25 and d["action_changed_share_when_fired"] == 0.5
    assert d["mean_action_l2_when_fired"] == 0.25
    assert d["task_pruned_share_of_firings"] == 0.5
    assert d["g_covers_task"] == 0.5 and d["d_covers_distractors"] == 0.5
    assert d["d_covers_lookalikes"] == 0.25  # the only step that saw a lookalike
    assert d["mean_entropy"] == 2.5
    assert step_diagnostics([]) == {}
