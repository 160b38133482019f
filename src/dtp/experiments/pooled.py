"""One paired table over the configs of several run folders that ran the same scenes.

    python -m dtp.experiments.pooled RUN [RUN ...] [--reference baseline] [--json OUT.json]

E.g. an audit's cluttered run beside a sweep of more configs on the same tasks and seeds: every
config's success with its Wilson CI, McNemar against the reference config on the scenes both ran,
how often it fired and how many tokens it pruned, and where its D lies (the robot's share, by most
pixels and by any pixel, and the share of its patches that show a distractor). Runs over other tasks
or seeds add to a config; an episode (config, task, seed) found in two runs is taken from the first.
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from ..analysis import stats
from ..eval.store import RunStore


def pooled_rows(run_dirs: list[str], reference: str = "baseline") -> dict[str, dict[str, Any]]:
    """config -> its figures, from the episodes and steps of `run_dirs`."""
    episodes: list[dict] = []
    steps: list[dict] = []
    seen: set[tuple] = set()
    for run in run_dirs:
        store = RunStore(run)
        eps = [e for e in store.episodes() if (e["config"], e["task"], e["seed"]) not in seen]
        keys = {e["key"] for e in eps}
        episodes += eps
        steps += [s for s in store.steps() if s["key"] in keys]
        seen |= {(e["config"], e["task"], e["seed"]) for e in eps}
    out: dict[str, dict[str, Any]] = {}
    for c in dict.fromkeys(e["config"] for e in episodes):
        rows = [e for e in episodes if e["config"] == c]
        k, n = sum(bool(e["success"]) for e in rows), len(rows)
        d = stats.step_diagnostics([s for s in steps if s["config"] == c])
        r = {"successes": k, "episodes": n, "rate": k / n, "ci95": list(stats.wilson_interval(k, n)),
             "fired_share": d.get("fired_share"), "mean_pruned_when_fired": d.get("mean_pruned_when_fired"),
             "d_major_robot": d.get("d_major_robot"), "d_any_robot": d.get("d_any_robot"),
             "d_any_distractors": d.get("d_any_distractors")}
        if c != reference:
            r["vs_reference"] = stats.mcnemar(stats.paired_outcomes(episodes, reference, c))
        out[c] = r
    return out


def markdown(rows: dict[str, dict[str, Any]], reference: str) -> str:
    def pct(x):
        return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"

    lines = [f"| config | success | 95% CI | vs {reference} (won / lost, McNemar p) | fires on | tokens pruned when fired | "
             "D mostly robot / any robot pixel | D showing a distractor |", "|---|---|---|---|---|---|---|---|"]
    for c, r in rows.items():
        t = r.get("vs_reference")
        test = "-" if t is None else f"{t['b_only']} / {t['a_only']}, p = {t['p_value']:.2g}"
        pruned = r["mean_pruned_when_fired"]
        lines.append(f"| {c} | {pct(r['rate'])} ({r['successes']}/{r['episodes']}) | [{pct(r['ci95'][0])}, "
                     f"{pct(r['ci95'][1])}] | {test} | {pct(r['fired_share'])} | "
                     f"{'-' if pruned is None else f'{pruned:.1f}'} | {pct(r['d_major_robot'])} / {pct(r['d_any_robot'])} | "
                     f"{pct(r['d_any_distractors'])} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m dtp.experiments.pooled", description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="run folders (dtp eval / sweep / audit's clean or cluttered)")
    p.add_argument("--reference", default="baseline", help="the config every other is paired against")
    p.add_argument("--json", default=None, help="also write the figures as JSON here")
    args = p.parse_args(argv)
    rows = pooled_rows(args.runs, args.reference)
    print(markdown(rows, args.reference), end="")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2, default=float)


if __name__ == "__main__":
    main()
