"""The distraction audit: could pruning help this model, and does DTP find what to prune?

On paired scenes (the same seeds), with the baseline as reference:
  (a) clean vs cluttered: what the clutter costs (Meta-World: distractors and lookalikes off;
      LIBERO: a `_with_*` suite's task against the same task of its base suite, same initial states);
  (b) oracle removal: exact pruning of every distractor-only patch (region "oracle_removal", tau 0),
      the upper bound of any distractor pruning;
  (c) DTP at the chosen tau; (d) random pruning outside G of as many tokens.
Beside success: how much of the action attention lands on distractor patches, and D's precision and
recall against them. Two resumable run folders (`<out>/clean`, `<out>/cluttered`), then
`<out>/audit.json`, `audit.md` and `audit.png`.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..analysis import stats
from ..config import DTPConfig
from ..errors import ConfigError
from ..eval.runner import EvalSpec, config_name

ORACLE_REMOVAL = "oracle_removal@tau=0"
WITH = re.compile(r"^(libero_\w+?)_with_\w+/(\d+)$")


def audit_configs(dtp: DTPConfig) -> dict[str, DTPConfig]:
    """The cluttered run's configs: baseline, oracle removal, DTP, random outside G at DTP's count."""
    dtp = dtp.replace(enabled=True)
    return {
        "baseline": dtp.replace(enabled=False),
        ORACLE_REMOVAL: DTPConfig(region="oracle_removal", tau=0.0, relevance_layers=dtp.relevance_layers),
        config_name(dtp): dtp,
        config_name(dtp.replace(ablation="random_outside")): dtp.replace(ablation="random_outside"),
    }


def clean_twin(task: str) -> str | None:
    """The clutter-free twin of a task: itself on Meta-World (distractors off); on LIBERO the base
    suite's task with the same goal for a `_with_*` suite's task; None where there is none."""
    m = WITH.match(task)
    if m is None:
        return None if task.startswith("libero_") else task
    from ..envs.libero.names import load_suite
    from ..envs.libero.scene_parts import scene_parts

    base, index = m.group(1), int(m.group(2))
    goal = _goal_categories(load_suite(task.split("/")[0]), index, scene_parts)
    base_suite = load_suite(base)
    for j in range(base_suite.n_tasks):
        if _goal_categories(base_suite, j, scene_parts) == goal:
            return f"{base}/{j}"
    return None


def _goal_categories(suite, index: int, scene_parts) -> tuple:
    import os

    from libero.libero import get_libero_path
    from libero.libero.envs import bddl_utils

    task = suite.get_task(index)
    problem = bddl_utils.robosuite_parse_problem(os.path.join(get_libero_path("bddl_files"), task.problem_folder,
                                                              task.bddl_file))
    parts = scene_parts(problem, suite.name)
    return (tuple(parts.categories[o] for o in parts.task_objects), tuple(parts.categories[g] for g in parts.goals))


def audit_specs(run: dict[str, Any], dtp: DTPConfig) -> tuple[EvalSpec, EvalSpec | None, dict[str, str]]:
    """(cluttered spec, clean spec or None, cluttered task -> clean task) for the run options `run`."""
    from ..envs.benchmark import expand_tasks

    tasks = expand_tasks(run["tasks"])
    cluttered = EvalSpec(configs=audit_configs(dtp), **{**run, "tasks": tasks})
    twins = {t: clean_twin(t) for t in tasks}
    twins = {t: c for t, c in twins.items() if c is not None}
    if not twins:
        return cluttered, None, {}
    clean_fields = {**run, "tasks": tuple(dict.fromkeys(twins.values()))}
    if not any(t.startswith("libero_") for t in twins.values()):
        clean_fields.update(distractors=0, lookalikes=0)
    clean = EvalSpec(configs={"baseline": DTPConfig(enabled=False)}, **clean_fields)
    return cluttered, clean, twins


def _rate(episodes: list[dict], config: str) -> dict[str, Any]:
    rows = [e for e in episodes if e["config"] == config]
    k, n = sum(bool(e["success"]) for e in rows), len(rows)
    lo, hi = stats.wilson_interval(k, n) if n else (math.nan, math.nan)
    return {"successes": k, "episodes": n, "rate": k / n if n else math.nan, "ci95": [lo, hi]}


def summarize(cluttered: list[dict], cluttered_steps: list[dict], clean: list[dict] | None,
              twins: dict[str, str]) -> dict[str, Any]:
    """The audit's figures: success per arm with Wilson CIs, paired McNemar against the cluttered
    baseline, clutter's cost, the share of it oracle removal and DTP recover, attention on distractors."""
    configs = list(dict.fromkeys(e["config"] for e in cluttered))
    out: dict[str, Any] = {"arms": {}, "tests": {}}
    for c in configs:
        out["arms"][c] = _rate(cluttered, c)
        if c != "baseline":
            out["tests"][c] = stats.mcnemar(stats.paired_outcomes(cluttered, "baseline", c))
    base = out["arms"]["baseline"]["rate"]
    if clean:
        out["arms"]["clean"] = _rate(clean, "baseline")
        back = {c: t for t, c in twins.items()}
        by_clean = {(back.get(e["task"]), e["seed"]): bool(e["success"]) for e in clean}
        pairs = [(by_clean[(e["task"], e["seed"])], bool(e["success"])) for e in cluttered
                 if e["config"] == "baseline" and (e["task"], e["seed"]) in by_clean]
        out["tests"]["clean_vs_cluttered"] = stats.mcnemar(pairs)
        cost = out["arms"]["clean"]["rate"] - base
        out["clutter_cost"] = cost
        for c in configs:
            if c != "baseline" and cost > 0:
                out["arms"][c]["recovers_share_of_cost"] = (out["arms"][c]["rate"] - base) / cost
    diag = {c: stats.step_diagnostics([s for s in cluttered_steps if s["config"] == c]) for c in configs}
    out["attention_on_distractors"] = {c: d.get("a_on_distractors") for c, d in diag.items()}
    out["d_vs_distractors"] = {c: {"precision": d.get("d_precision_distractors"), "recall": d.get("d_covers_distractors"),
                                   "fired_share": d.get("fired_share")} for c, d in diag.items() if c != "baseline"}
    return out


def verdict_markdown(summary: dict[str, Any], title: str) -> str:
    """The audit's table and its verdict lines."""
    def pct(x):
        return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"

    lines = [f"# Distraction audit: {title}", "",
             "| arm | success | 95% CI | vs cluttered baseline (won / lost, McNemar p) | attention on distractors |",
             "|---|---|---|---|---|"]
    arms = summary["arms"]
    order = (["clean"] if "clean" in arms else []) + [a for a in arms if a != "clean"]
    for a in order:
        r = arms[a]
        lo, hi = r["ci95"]
        t = summary["tests"].get("clean_vs_cluttered" if a == "clean" else a)
        test = "-" if t is None else (f"{t['a_only']} / {t['b_only']}, p = {t['p_value']:.2g}" if a == "clean"
                                      else f"{t['b_only']} / {t['a_only']}, p = {t['p_value']:.2g}")
        att = summary["attention_on_distractors"].get(a)
        lines.append(f"| {a} | {pct(r['rate'])} ({r['successes']}/{r['episodes']}) | [{pct(lo)}, {pct(hi)}] | {test} | "
                     f"{pct(att)} |")
    lines.append("")
    if "clutter_cost" in summary:
        t = summary["tests"]["clean_vs_cluttered"]
        harm = summary["clutter_cost"] > 0 and t["p_value"] < 0.05
        lines.append(f"- Clutter costs {100 * summary['clutter_cost']:.1f} points of success (clean wins {t['a_only']}, cluttered "
                     f"{t['b_only']}, p = {t['p_value']:.2g}): {'there is harm to undo' if harm else 'no significant harm to undo'}.")
        if harm and ORACLE_REMOVAL in arms and "recovers_share_of_cost" in arms[ORACLE_REMOVAL]:  # a share of no cost means nothing
            lines.append(f"- Exact removal of every distractor patch recovers {pct(arms[ORACLE_REMOVAL]['recovers_share_of_cost'])} of that cost.")
    else:
        lines.append("- No clean twin for these tasks: clutter's cost is not measured.")
    for c, d in summary["d_vs_distractors"].items():
        lines.append(f"- {c}: fires on {pct(d['fired_share'])} of steps; of its pruned patches {pct(d['precision'])} show a "
                     f"distractor, and it prunes {pct(d['recall'])} of the distractor patches.")
    return "\n".join(lines) + "\n"


def plot_audit(summary: dict[str, Any], path: Path) -> Path:
    """Success per arm with Wilson CIs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = summary["arms"]
    names = (["clean"] if "clean" in arms else []) + [a for a in arms if a != "clean"]
    rates = [100 * arms[a]["rate"] for a in names]
    err = [[100 * (arms[a]["rate"] - arms[a]["ci95"][0]) for a in names],
           [100 * (arms[a]["ci95"][1] - arms[a]["rate"]) for a in names]]
    fig, ax = plt.subplots(figsize=(1.4 * len(names) + 2, 3.2))
    ax.bar(range(len(names)), rates, yerr=err, capsize=4, color=["#7a9" if a == "clean" else "#79c" for a in names])
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("success (%)")
    ax.set_title("distraction audit (95% Wilson CIs)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_audit(out: Path, cluttered_store, clean_store, twins: dict[str, str], title: str) -> dict[str, Any]:
    """audit.json, audit.md, audit.png in `out` from the two run folders."""
    summary = summarize(cluttered_store.episodes(), cluttered_store.steps(),
                        clean_store.episodes() if clean_store is not None else None, twins)
    summary["twins"] = twins
    (out / "audit.json").write_text(json.dumps(summary, indent=2, default=float))
    (out / "audit.md").write_text(verdict_markdown(summary, title))
    plot_audit(summary, out / "audit.png")
    return summary


def check_dtp(dtp: DTPConfig) -> DTPConfig:
    if dtp.region not in ("attention", "similarity"):
        raise ConfigError(f"the audit runs DTP with its own region (attention or similarity), got region={dtp.region!r}")
    return replace(dtp)
