"""The paper's statistics on result rows: success intervals, paired tests, attention analysis."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Iterable

import numpy as np
from scipy import stats as sps

from ..numeric import nanmean


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """95% Wilson score interval of a success rate (well-behaved at 0 and n)."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def relative_improvement(baseline: float, new: float) -> float:
    """(new - baseline) / baseline; NaN when the baseline is 0 (undefined)."""
    return (new - baseline) / baseline if baseline else float("nan")


def mcnemar(pairs: Iterable[tuple[bool, bool]]) -> dict[str, float]:
    """Exact McNemar test on paired outcomes (a, b) of two configs on the same seeds.

    b01: a failed and b succeeded; b10: the reverse. Two-sided exact binomial p-value.
    """
    b01 = b10 = n = 0
    for a, b in pairs:
        n += 1
        if not a and b:
            b01 += 1
        elif a and not b:
            b10 += 1
    discordant = b01 + b10
    p = float(sps.binomtest(b01, discordant, 0.5).pvalue) if discordant else 1.0
    return {"pairs": n, "b_only": b01, "a_only": b10, "p_value": p}


def mann_whitney_fail_vs_success(fail: list[float], success: list[float]) -> dict[str, float]:
    """Mann-Whitney U of a per-episode quantity, failures vs successes (one-sided: failures higher)."""
    fail = [x for x in fail if x is not None and math.isfinite(x)]
    success = [x for x in success if x is not None and math.isfinite(x)]
    out = {"n_fail": len(fail), "n_success": len(success),
           "mean_fail": float(np.mean(fail)) if fail else float("nan"),
           "mean_success": float(np.mean(success)) if success else float("nan")}
    if len(fail) < 1 or len(success) < 1:
        return {**out, "U": float("nan"), "p_greater": float("nan"), "p_two_sided": float("nan")}
    u, p1 = sps.mannwhitneyu(fail, success, alternative="greater")
    _, p2 = sps.mannwhitneyu(fail, success, alternative="two-sided")
    return {**out, "U": float(u), "p_greater": float(p1), "p_two_sided": float(p2)}


def success_by(episodes: list[dict[str, Any]], keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """Success rate with Wilson interval grouped by `keys` (e.g. ("config", "task"))."""
    groups: dict[tuple, list[bool]] = defaultdict(list)
    for e in episodes:
        groups[tuple(e[k] for k in keys)].append(bool(e["success"]))
    rows = []
    for g, v in sorted(groups.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        k, n = sum(v), len(v)
        lo, hi = wilson_interval(k, n)
        rows.append({**dict(zip(keys, g)), "successes": k, "episodes": n, "rate": k / n, "ci_low": lo, "ci_high": hi})
    return rows


def paired_outcomes(episodes: list[dict[str, Any]], a: str, b: str) -> list[tuple[bool, bool]]:
    """(success under a, success under b) for every (task, seed) both configs ran."""
    by = {(e["config"], e["task"], e["seed"]): bool(e["success"]) for e in episodes}
    return [(by[(a, t, s)], by[(b, t, s)]) for (c, t, s) in by if c == a and (b, t, s) in by]


def time_curve(steps: list[dict[str, Any]], outcome: dict[str, bool], value: str = "irrelevant_fraction",
               bins: int = 10) -> dict[str, list[float]]:
    """Mean `value` over normalised episode time (bins), separately for successful and failed episodes."""
    acc = {True: [[] for _ in range(bins)], False: [[] for _ in range(bins)]}
    for s in steps:
        v = s.get(value)
        if v is None or not math.isfinite(v) or s["key"] not in outcome:
            continue
        b = min(bins - 1, int(s["t_norm"] * bins))
        acc[outcome[s["key"]]][b].append(v)
    mean = lambda xs: float(np.mean(xs)) if xs else float("nan")  # noqa: E731
    return {"success": [mean(x) for x in acc[True]], "failure": [mean(x) for x in acc[False]],
            "bin_centres": [(i + 0.5) / bins for i in range(bins)]}


def step_diagnostics(steps: list[dict[str, Any]], near: float = 0.05) -> dict[str, float]:
    """Did DTP fire, how much, how close to the threshold, and did the action change?"""
    if not steps:
        return {}
    fired = [s for s in steps if s.get("fired")]
    margins = [s["margin"] for s in fired if s.get("margin") is not None]
    scored = [s for s in fired if s.get("d_on_task") is not None]
    return {
        "steps": len(steps),
        "fired_share": len(fired) / len(steps),
        "mean_pruned_when_fired": float(np.mean([s["n_pruned"] for s in fired])) if fired else 0.0,
        "near_threshold_share_of_firings": float(np.mean([m <= near for m in margins])) if margins else float("nan"),
        "action_changed_share": float(np.mean([bool(s.get("action_changed")) for s in steps])),
        "action_changed_share_when_fired": float(np.mean([bool(s.get("action_changed")) for s in fired])) if fired else float("nan"),
        "mean_action_l2_when_fired": float(np.mean([s.get("action_l2") or 0.0 for s in fired])) if fired else float("nan"),
        "mean_entropy": float(np.nanmean([s["entropy"] for s in steps if s.get("entropy") is not None])),
        # firings whose D held at least one patch of the task object, goal or gripper (DTP pruning the task)
        # (NaN when the run did not score regions: no d_on_task to count, not 0%)
        "task_pruned_share_of_firings": float(np.mean([s["d_on_task"] > 0 for s in scored])) if scored else float("nan"),
        "g_covers_task": nanmean(s.get("g_covers_task") for s in steps),
        "g_covers_object": nanmean(s.get("g_covers_object") for s in steps),  # the named object alone
        "d_covers_distractors": nanmean(s.get("d_covers_distractors") for s in steps),
        "d_covers_lookalikes": nanmean(s.get("d_covers_lookalikes") for s in steps),  # grounded variant
        "a_on_distractors": nanmean(s.get("a_on_distractors") for s in steps),  # share of A on distractor patches
        "d_precision_distractors": nanmean(s.get("d_precision_distractors") for s in steps),  # share of D that is one
        # where G's and D's patches lie, the robot's own body included (means over steps with a G / a D)
        **{key: nanmean(s.get(key) for s in steps) for key in PATCH_SHARE_KEYS},
    }


PATCH_SHARE_CLASSES = ("robot", "gripper", "task", "distractors", "background")  # as dtp.eval.episode.PATCH_CLASSES
PATCH_SHARE_KEYS = tuple([f"g_major_{c}" for c in PATCH_SHARE_CLASSES] + [f"d_major_{c}" for c in PATCH_SHARE_CLASSES]
                         + [f"d_any_{c}" for c in PATCH_SHARE_CLASSES])
