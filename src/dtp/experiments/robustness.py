"""Token-removal robustness of a model on benchmark scenes: random vs highest-attention background pruning.

Three paired configs on the same seeds, with G = the task region from the simulator's
segmentation (region="oracle": task object, goal, gripper):
- "baseline": one plain pass (DTP off, attention still captured for the sink statistic);
- "random_outside_task": prune round(f * tokens outside G) chosen at random, seeded per step;
- "top_attention_outside_task": prune as many, the highest prompt->image attention outside G.
A robust model loses little to either; a model that keeps information in a few background
"sink" patches loses much more to the second (DESIGN.md; issue 10's targets use f = 0.25).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from ..analysis.sinks import sink_statistic
from ..analysis.stats import mcnemar, paired_outcomes, wilson_interval
from ..config import DTPConfig
from ..errors import ConfigError

__all__ = ["BASELINE", "RANDOM", "TOP", "robustness_configs", "robustness_summary", "format_summary"]

BASELINE, RANDOM, TOP = "baseline", "random_outside_task", "top_attention_outside_task"


def robustness_configs(fraction: float = 0.25, seed: int = 0) -> dict[str, DTPConfig]:
    """The three paired configs; `fraction` of the tokens outside the task region is removed."""
    base = DTPConfig(region="oracle", prune_fraction=fraction, seed=seed)
    return {
        BASELINE: base.replace(enabled=False),
        RANDOM: base.replace(ablation="random_fraction_outside"),
        TOP: base.replace(ablation="top_attention_outside"),
    }


def _rate(eps: list[dict[str, Any]]) -> dict[str, Any]:
    n, k = len(eps), sum(bool(e["success"]) for e in eps)
    lo, hi = wilson_interval(k, n)
    return {"successes": k, "episodes": n, "rate": k / n if n else float("nan"), "ci95": [lo, hi]}


def _compare(eps: list[dict[str, Any]], a: str, b: str) -> dict[str, Any]:
    """b against a on their common seeds: drop in points (a - b) and McNemar's exact p."""
    pairs = paired_outcomes(eps, a, b)
    n = len(pairs)
    drop = 100.0 * (sum(x for x, _ in pairs) - sum(y for _, y in pairs)) / n if n else float("nan")
    test = mcnemar(pairs)
    return {"pairs": n, "drop_points": drop, "p_value": test["p_value"],
            f"{b}_only": test["b_only"], f"{a}_only": test["a_only"]}


def _sink(steps: list[dict[str, Any]], every: int) -> dict[str, Any] | None:
    frames = [s for s in steps if s.get("config") == BASELINE and s.get("prompt_argmax", -1) is not None
              and s.get("prompt_argmax", -1) >= 0 and int(s["step"]) % every == 0]
    if not frames:
        return None
    grid = (int(frames[0]["grid_h"]), int(frames[0]["grid_w"]))
    return sink_statistic([s["prompt_argmax"] for s in frames], grid,
                          [s.get("prompt_argmax_in_region") for s in frames])


def robustness_summary(episodes: list[dict[str, Any]], steps: list[dict[str, Any]], *,
                       sink_every: int | None = None) -> dict[str, Any]:
    """Success per config (Wilson 95% CI), drops vs the baseline and top vs random (McNemar), pooled
    and per task; the sink statistic over the baseline's frames.

    sink_every: None scores the first frame of each episode (one per scene); k scores every k-th step.
    """
    if sink_every is not None and sink_every < 1:
        raise ConfigError(f"sink_every must be >= 1 (or None for the first frame), got {sink_every}")
    configs = sorted({e["config"] for e in episodes})
    missing = [c for c in (BASELINE, RANDOM, TOP) if c not in configs]
    if missing:
        raise ConfigError(f"the run has no episodes of {missing}; is it a robustness run?")
    tasks = sorted({e["task"] for e in episodes})
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in episodes:
        by_task[e["task"]].append(e)

    def block(eps: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "success": {c: _rate([e for e in eps if e["config"] == c]) for c in (BASELINE, RANDOM, TOP)},
            "random_vs_baseline": _compare(eps, BASELINE, RANDOM),
            "top_vs_baseline": _compare(eps, BASELINE, TOP),
            "top_vs_random": _compare(eps, RANDOM, TOP),
        }

    every = sink_every or 10**9  # step % huge == 0 only at step 0
    out = {"all": block(episodes), "per_task": {t: block(by_task[t]) for t in tasks}}
    out["sink"] = _sink(steps, every)
    for t in tasks:
        out["per_task"][t]["sink"] = _sink([s for s in steps if s.get("task") == t], every)
    out["sink_frames"] = "first step of each episode" if sink_every is None else f"every {sink_every}th step"
    return out


def format_summary(s: dict[str, Any]) -> str:
    """A plain-text table of `robustness_summary`."""
    lines = [f"{'task':<22}{'config':<30}{'success':>12}{'95% CI':>16}{'drop (pts)':>12}{'p':>8}"]

    def rows(name: str, b: dict[str, Any]) -> None:
        cmp = {RANDOM: b["random_vs_baseline"], TOP: b["top_vs_baseline"]}
        for c in (BASELINE, RANDOM, TOP):
            r = b["success"][c]
            ci = f"[{100 * r['ci95'][0]:.0f}, {100 * r['ci95'][1]:.0f}]"
            drop, p = ("", "") if c == BASELINE else (f"{cmp[c]['drop_points']:+.1f}", f"{cmp[c]['p_value']:.3f}")
            lines.append(f"{name:<22}{c:<30}{r['successes']:>5}/{r['episodes']:<3}{100 * r['rate']:>3.0f}%"
                         f"{ci:>16}{drop:>12}{p:>8}")
        t = b["top_vs_random"]
        lines.append(f"{name:<22}{'top vs random':<30}{'':>28}{t['drop_points']:>+12.1f}{t['p_value']:>8.3f}")

    rows("all", s["all"])
    for task, b in s["per_task"].items():
        rows(task, b)

    def sink_line(name: str, sk: dict[str, Any] | None) -> str:
        if sk is None:
            return f"sink {name}: no captured prompt->image attention in the baseline's steps"
        where = "nan" if sk["top_in_region_share"] != sk["top_in_region_share"] else f"{100 * sk['top_in_region_share']:.0f}%"
        return (
            f"sink {name} ({s['sink_frames']}, {sk['frames']} frames): patch {sk['top_patch']} (row {sk['top_row']}, "
            f"col {sk['top_col']}) is the argmax of prompt->image attention in {100 * sk['top_share']:.1f}% of "
            f"frames ({'a sink' if sk['sink'] else 'no sink'}; {sk['distinct']} distinct argmax patches); "
            f"on the task region in {where} of those frames"
        )

    lines.append(sink_line("all", s["sink"]))
    lines += [sink_line(task, b["sink"]) for task, b in s["per_task"].items()]
    return "\n".join(lines)
