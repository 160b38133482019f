"""`dtp analyze`: tables, plots and a one-page Markdown report of a run folder."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..eval.store import RunStore
from ..numeric import nanmean
from ..regions import region_sources
from . import stats
from .stats import PATCH_SHARE_CLASSES
from .empty_cells import NoteMarks, empty_reason


def summary_table(episodes: list[dict[str, Any]]) -> str:
    """Plain-text success table: config x task, with the average over tasks."""
    rows = stats.success_by(episodes, ("config", "task"))
    tasks = sorted({r["task"] for r in rows})
    configs = list(dict.fromkeys(e["config"] for e in episodes))
    rate = {(r["config"], r["task"]): r for r in rows}
    width = {t: max(15, len(t) + 1) for t in tasks}  # LIBERO names ("libero_object_with_mug/3") are long
    head = f"{'config':<28}" + "".join(f"{t:>{width[t]}}" for t in tasks) + f"{'average':>10}"
    lines = [head]
    for c in configs:
        cells, vals = [], []
        for t in tasks:
            r = rate.get((c, t))
            cell = f"{r['rate'] * 100:.1f}% n={r['episodes']:<3}" if r else "-"
            cells.append(f"{cell:>{width[t]}}")
            if r:
                vals.append(r["rate"])
        avg = f"{np.mean(vals) * 100:>9.1f}%" if vals else ""
        lines.append(f"{c:<28}" + "".join(cells) + avg)
    return "\n".join(lines)


def _tau_series(name: str) -> tuple[str, float] | None:
    """(region source, tau) of a DTP config named like runner.config_name: "dtp@tau=1" is the
    attention region, "oracle@tau=1" DTP over the oracle region; anything else (baseline,
    ablations, eval's "dtp") is in no tau series."""
    what, sep, tau = name.partition("@tau=")
    if not sep:
        return None
    region = "attention" if what == "dtp" else what
    if region not in region_sources():
        return None
    try:
        return region, float(tau)
    except ValueError:
        return None


def _paired(eps: list[dict[str, Any]], a: str, b: str) -> tuple[dict[str, Any], float, float]:
    """Exact McNemar of config b against config a on the scenes both ran, and both rates there."""
    pairs = stats.paired_outcomes(eps, a, b)
    ra = float(np.mean([x for x, _ in pairs])) if pairs else float("nan")
    rb = float(np.mean([y for _, y in pairs])) if pairs else float("nan")
    return stats.mcnemar(pairs), ra, rb


def _dtp_at_same_tau(name: str) -> str | None:
    """'dtp@tau=T' for an ablation or region-source config at tau T ("random_outside@tau=1",
    "oracle@tau=1"); None for DTP itself, the baseline and untau'd names."""
    what, sep, tau = name.partition("@tau=")
    if not sep or what == "dtp":
        return None
    return f"dtp@tau={tau}"


def _region_by_config(store: RunStore, configs: list[str]) -> dict[str, str]:
    """Each config's region source from the run's config.json (older runs named it `relevance`)."""
    try:
        spec = store.config().get("configs", {})
    except FileNotFoundError:
        spec = {}
    out = {}
    for c in configs:
        d = spec.get(c, {})
        out[c] = d.get("region") or d.get("relevance") or "attention"
    return out


def analyse(run_dir: str | Path) -> dict[str, Any]:
    """Every statistic of the report, as one JSON-able dict."""
    store = RunStore(run_dir)
    eps, steps = store.episodes(), store.steps()
    configs = list(dict.fromkeys(e["config"] for e in eps))
    out: dict[str, Any] = {"episodes": len(eps), "configs": configs}
    out["region_by_config"] = _region_by_config(store, configs)
    out["success_by_config_task"] = stats.success_by(eps, ("config", "task"))
    out["success_by_config"] = stats.success_by(eps, ("config",))
    base_rate = {r["config"]: r["rate"] for r in out["success_by_config"]}
    # paired comparisons against the baseline
    out["paired_vs_baseline"] = {}
    if "baseline" in configs:
        for c in configs:
            if c != "baseline":
                m, rb, rc = _paired(eps, "baseline", c)
                out["paired_vs_baseline"][c] = {**m, "baseline_rate": rb, "config_rate": rc,
                                                "relative_improvement": stats.relative_improvement(rb, rc)}
    # each ablation and region source against DTP at the same tau: does the rule beat random
    # pruning, does a better G (oracle) beat attention's?
    out["paired_vs_dtp"] = {}
    for c in configs:
        dtp = _dtp_at_same_tau(c)
        if dtp is not None and dtp in configs:
            m, rd, rc = _paired(eps, dtp, c)
            out["paired_vs_dtp"][c] = {**m, "dtp": dtp, "dtp_rate": rd, "config_rate": rc}
    # irrelevant attention: failures vs successes, per config and task (paper, Fig. 2)
    out["mann_whitney"] = {}
    groups: dict[tuple[str, str], dict[bool, list[float]]] = defaultdict(lambda: {True: [], False: []})
    for e in eps:
        v = e.get("mean_irrelevant_fraction")
        if v is not None and math.isfinite(v):
            groups[(e["config"], e["task"])][bool(e["success"])].append(v)
            groups[(e["config"], "all")][bool(e["success"])].append(v)
    for (c, t), g in sorted(groups.items()):
        out["mann_whitney"][f"{c}|{t}"] = stats.mann_whitney_fail_vs_success(g[False], g[True])
    outcome = {e["key"]: bool(e["success"]) for e in eps}
    out["time_curves"] = {}
    for c in configs:
        keys = {e["key"] for e in eps if e["config"] == c}
        out["time_curves"][c] = stats.time_curve([s for s in steps if s["key"] in keys], outcome)
    # tau curves per region source, each on the scenes every tau of it (and the baseline) ran, so that
    # taus run on more scenes or tasks are compared on equal terms; the best tau of the main series
    # (the most taus, attention on ties) is the paper's "upper bound" under fixed weights
    series = sorted((rt[0], rt[1], c) for c in configs if (rt := _tau_series(c)) is not None)
    entropy = {c: nanmean(s.get("entropy") for s in steps if s["config"] == c) for c in configs}
    outcome_of = {(e["config"], e["task"], e["seed"]): bool(e["success"]) for e in eps}
    scenes_of = defaultdict(set)
    for c, t, sd in outcome_of:
        scenes_of[c].add((t, sd))
    common: dict[str, set] = {}
    for reg, _, c in series:
        common[reg] = common.get(reg, scenes_of["baseline"] if "baseline" in configs else scenes_of[c]) & scenes_of[c]
    out["tau_curve"] = []
    for reg, t, c in series:
        wins = [outcome_of[(c, *sc)] for sc in common[reg]]
        out["tau_curve"].append({"tau": t, "region": reg, "config": c, "scenes": len(wins),
                                 "rate": float(np.mean(wins)) if wins else float("nan"), "mean_entropy": entropy[c],
                                 "ci": stats.wilson_interval(sum(wins), len(wins))})
    if series:
        counts = defaultdict(int)
        for reg, _, _ in series:
            counts[reg] += 1
        main = max(counts, key=lambda reg: (counts[reg], reg == "attention"))
        best = max((r for r in out["tau_curve"] if r["region"] == main), key=lambda r: r["rate"])
        base = [outcome_of[("baseline", *sc)] for sc in common[main]] if "baseline" in configs else []
        out["best_tau"] = {"tau": best["tau"], "region": main, "rate": best["rate"], "scenes": best["scenes"],
                           "baseline_rate": float(np.mean(base)) if base else None}
    out["diagnostics"] = {c: stats.step_diagnostics([s for s in steps if s["config"] == c]) for c in configs}
    out["baseline_entropy"] = entropy.get("baseline")
    return out


def _plots(res: dict[str, Any], eps: list[dict[str, Any]], steps: list[dict[str, Any]], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .heatmaps import save_figure

    paths = []
    # 1. success per config with 95% intervals
    rows = res["success_by_config"]
    fig, ax = plt.subplots(figsize=(max(5, 0.8 * len(rows)), 3.4))
    x = np.arange(len(rows))
    rates = [r["rate"] for r in rows]
    err = [[r["rate"] - r["ci_low"] for r in rows], [r["ci_high"] - r["rate"] for r in rows]]
    ax.bar(x, rates, yerr=err, capsize=3, color=["#888" if r["config"] == "baseline" else "#3a7" for r in rows])
    ax.set_xticks(x, [r["config"] for r in rows], rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("success rate")
    ax.set_ylim(0, 1)
    ax.set_title("success per config (95% Wilson)")
    paths.append(save_figure(fig, out / "success_by_config.png"))
    # 2. tau -> success curve
    if res.get("tau_curve"):
        tc = res["tau_curve"]
        fig, ax = plt.subplots(figsize=(5, 3.4))
        for reg in dict.fromkeys(r["region"] for r in tc):
            pts = [r for r in tc if r["region"] == reg]
            ax.errorbar([r["tau"] for r in pts], [r["rate"] for r in pts],
                        yerr=[[r["rate"] - r["ci"][0] for r in pts], [r["ci"][1] - r["rate"] for r in pts]],
                        marker="o", capsize=3, label=f"DTP, {reg} region")
        base = res["best_tau"].get("baseline_rate")
        if base is not None:
            ax.axhline(base, color="#888", ls="--", label="baseline")
        ax.set_xlabel("tau")
        ax.set_ylabel("success rate")
        ax.set_title("tau sweep")
        ax.legend()
        paths.append(save_figure(fig, out / "tau_curve.png"))
    # 3. irrelevant attention over normalised time, success vs failure (baseline)
    cfg = "baseline" if "baseline" in res["time_curves"] else next(iter(res["time_curves"]), None)
    if cfg:
        tc = res["time_curves"][cfg]
        fig, ax = plt.subplots(figsize=(5, 3.4))
        ax.plot(tc["bin_centres"], tc["success"], marker="o", label="successful episodes")
        ax.plot(tc["bin_centres"], tc["failure"], marker="s", label="failed episodes")
        ax.set_xlabel("normalised episode time")
        ax.set_ylabel("attention share outside G")
        ax.set_title(f"irrelevant attention over time ({cfg})")
        ax.legend()
        paths.append(save_figure(fig, out / "irrelevant_attention_over_time.png"))
        # 4. per-episode distribution, success vs failure
        succ = [e["mean_irrelevant_fraction"] for e in eps if e["config"] == cfg and e["success"] and e.get("mean_irrelevant_fraction") is not None]
        fail = [e["mean_irrelevant_fraction"] for e in eps if e["config"] == cfg and not e["success"] and e.get("mean_irrelevant_fraction") is not None]
        if succ or fail:
            fig, ax = plt.subplots(figsize=(4, 3.4))
            ax.boxplot([succ or [np.nan], fail or [np.nan]])
            ax.set_xticks([1, 2], [f"success (n={len(succ)})", f"failure (n={len(fail)})"])
            ax.set_ylabel("mean attention share outside G")
            ax.set_title(f"per episode ({cfg})")
            paths.append(save_figure(fig, out / "irrelevant_attention_success_vs_failure.png"))
    # 5. rule margins of DTP configs: how close firings sit to the threshold
    margins = [s["margin"] for s in steps if s.get("fired") and s.get("margin") is not None and s["config"] != "baseline"]
    all_m = [s["margin"] for s in steps if s.get("margin") is not None and s.get("tau") is not None]
    if all_m:
        fig, ax = plt.subplots(figsize=(5, 3.4))
        ax.hist(np.clip(all_m, -3, 3), bins=60, color="#999", label="all DTP steps")
        if margins:
            ax.hist(np.clip(margins, -3, 3), bins=60, color="#d53", alpha=0.8, label="steps that fired")
        ax.axvline(0, color="k", lw=0.8)
        ax.set_xlabel("margin: max outside-G A / a_m - tau (clipped to +-3)")
        ax.set_ylabel("steps")
        ax.legend()
        paths.append(save_figure(fig, out / "rule_margin.png"))
    return paths


def patch_class_table(diagnostics: dict[str, dict]) -> list[str]:
    """Markdown lines: where each config's G and D lie (robot, gripper, task parts, distractors,
    background), by each patch's most common class and, for D, by any pixel; [] if not scored."""
    rows = [(c, d) for c, d in diagnostics.items() if d and not math.isnan(d.get("g_major_robot", float("nan")))]
    if not rows:
        return []
    head = " | ".join(PATCH_SHARE_CLASSES)
    md = ["", "## Where G and D lie", "",
          "Share of G's and of D's patches by the class most of their pixels show; for D also the share that "
          "show any pixel of it (D's classes can overlap that way). The robot is the arm's own body, the "
          "gripper its hand.", "",
          f"| config | region | {head} |", "|---|---|" + "---|" * len(PATCH_SHARE_CLASSES)]
    for c, d in rows:
        for region, key in (("G, most pixels", "g_major"), ("D, most pixels", "d_major"), ("D, any pixel", "d_any")):
            cells = [_fmt(d.get(f"{key}_{k}"), True) for k in PATCH_SHARE_CLASSES]
            md.append(f"| {c} | {region} | " + " | ".join(cells) + " |")
    return md


def _fmt(x: Any, pct: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, float):
        return f"{x * 100:.1f}%" if pct else f"{x:.3g}"
    return str(x)


def _success_section(run: Path, eps: list[dict], cfg: dict, res: dict) -> list[str]:
    """Markdown lines: the run's title and settings, success per config with its interval, per task."""
    md = [f"# DTP report: `{run}`", "",
          f"{len(eps)} episodes; model `{cfg.get('model')}`; tasks {', '.join(cfg.get('tasks', []))}; "
          f"{cfg.get('distractors')} distractors ({cfg.get('palette')} palette); seed set {cfg.get('seed')}.", "",
          "## Success (95% Wilson interval)", "",
          "Region source: where G comes from (attention, similarity, the simulator's ground truth `oracle`, "
          "a user `mask`); the baseline prunes nothing, its G only feeds the diagnostics.", "",
          "| config | region source | successes / episodes | rate | 95% CI |", "|---|---|---|---|---|"]
    regions = res["region_by_config"]
    for r in res["success_by_config"]:
        md.append(f"| {r['config']} | {regions.get(r['config'], '-')} | {r['successes']} / {r['episodes']} | "
                  f"{_fmt(r['rate'], True)} | {_fmt(r['ci_low'], True)} - {_fmt(r['ci_high'], True)} |")
    md += ["", "### Per task", "", "```", summary_table(eps), "```", ""]
    return md


def _paired_sections(res: dict) -> list[str]:
    """Markdown lines: McNemar pairs with the baseline and with DTP at the same tau (if any ran)."""
    md: list[str] = []
    if res["paired_vs_baseline"]:
        md += ["## Paired with the baseline (same seeds, exact McNemar)", "",
               "| config | pairs | baseline | config | rel. change | only config succeeded | only baseline succeeded | p |",
               "|---|---|---|---|---|---|---|---|"]
        for c, m in res["paired_vs_baseline"].items():
            md.append(f"| {c} | {m['pairs']} | {_fmt(m['baseline_rate'], True)} | {_fmt(m['config_rate'], True)} | "
                      f"{_fmt(m['relative_improvement'], True)} | {m['b_only']} | {m['a_only']} | {_fmt(m['p_value'])} |")
        md.append("")
    if res["paired_vs_dtp"]:
        md += ["## Paired with DTP at the same tau (exact McNemar)", "",
               "Random pruning of as many tokens: does the rule beat chance? The oracle region: does a better G help?", "",
               "| config | DTP | pairs | DTP rate | config rate | only config succeeded | only DTP succeeded | p |",
               "|---|---|---|---|---|---|---|---|"]
        for c, m in res["paired_vs_dtp"].items():
            md.append(f"| {c} | {m['dtp']} | {m['pairs']} | {_fmt(m['dtp_rate'], True)} | {_fmt(m['config_rate'], True)} | "
                      f"{m['b_only']} | {m['a_only']} | {_fmt(m['p_value'])} |")
        md.append("")
    return md


def _tau_section(res: dict) -> list[str]:
    """Markdown lines: the tau sweep's curve and its best tau, flagged as an upper bound ([] if no sweep)."""
    if not res.get("best_tau"):
        return []
    b = res["best_tau"]
    md = ["## tau sweep", "", f"Best tau {b['tau']:g} ({b['region']} region): {_fmt(b['rate'], True)} "
          f"(baseline {_fmt(b['baseline_rate'], True)}), on the {b['scenes']} scenes every tau and the baseline ran. "
          "Picking the best tau on the same seeds it is scored on is the paper's 'upper bound', not a held-out result.", "",
          "| region source | tau | scenes | rate | mean action-token entropy (nats) |", "|---|---|---|---|---|"]
    for r in res["tau_curve"]:
        md.append(f"| {r['region']} | {r['tau']:g} | {r['scenes']} | {_fmt(r['rate'], True)} | "
                  f"{_fmt(r['mean_entropy'])} |")
    md.append("")
    return md


def _attention_section(res: dict, cfg: dict) -> list[str]:
    """Markdown lines: irrelevant attention of failed vs successful episodes (Mann-Whitney U)."""
    md = ["## Irrelevant attention: failed vs successful episodes (Mann-Whitney U, one-sided: failures higher)", "",
          "| config / task | n fail | n success | mean fail | mean success | U | p |", "|---|---|---|---|---|---|---|"]
    for k, m in res["mann_whitney"].items():
        md.append(f"| {k} | {m['n_fail']} | {m['n_success']} | {_fmt(m['mean_fail'])} | {_fmt(m['mean_success'])} | "
                  f"{_fmt(m['U'])} | {_fmt(m['p_greater'])} |")
    if not cfg.get("observe", True):
        md += ["", "Configs with DTP off ran without capture (observe off, as `dtp demo` runs its baseline), so they "
                   "have no irrelevant attention here; `dtp eval --out RUN` captures it."]
    return md


def _diagnostics_section(res: dict, steps: list[dict], cfg: dict) -> list[str]:
    """Markdown lines: per config firing and region-coverage diagnostics, empty cells explained."""
    md = ["", "## Diagnostics per config", "",
          "| config | fired | pruned when fired | firings within 0.05 of threshold | action changed when fired | "
          "L2 change when fired | firings that prune a task patch | G covers task patches | "
          "G covers the named object | D covers distractor patches | D covers lookalike patches |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
    marks = NoteMarks()
    for c, d in res["diagnostics"].items():
        if d:
            rows = [s for s in steps if s["config"] == c]
            cells = [_fmt(d["fired_share"], True), _fmt(d["mean_pruned_when_fired"])]
            for col, pct in (("near_threshold_share_of_firings", True), ("action_changed_share_when_fired", True),
                             ("mean_action_l2_when_fired", False), ("task_pruned_share_of_firings", True),
                             ("g_covers_task", True), ("g_covers_object", True), ("d_covers_distractors", True),
                             ("d_covers_lookalikes", True)):
                cells.append(marks.cell(_fmt(d.get(col), pct), empty_reason(col, c, cfg, rows)))
            md.append(f"| {c} | " + " | ".join(cells) + " |")
    if marks.used:
        md += ["", "Empty cells:", ""] + [f"- {line}" for line in marks.lines()]
    md += patch_class_table(res["diagnostics"])
    md += ["", "Ground truth from the simulator's segmentation mapped to patches (a patch counts if any of its "
           "pixels shows the part): task patches = task object, goal and gripper; the named object = the task "
           "object (reach: its target ball); lookalikes = the grounded variant's copies of the named parts in other colours. Shares are means over logged steps where the part is visible."]
    return md


def write_report(run_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Write report.md, stats.json and PNG figures; return the report's path."""
    run = Path(run_dir)
    store = RunStore(run)
    if not (run / "episodes.jsonl").exists():
        raise ConfigError(f"{run} has no episodes.jsonl: run `dtp eval` or `dtp sweep` with --out {run} first")
    out = Path(out_dir) if out_dir else run / "report"
    out.mkdir(parents=True, exist_ok=True)
    eps, steps = store.episodes(), store.steps()
    res = analyse(run)
    (out / "stats.json").write_text(json.dumps(res, indent=1, default=float))
    figs = _plots(res, eps, steps, out)
    cfg = store.config()
    md = _success_section(run, eps, cfg, res) + _paired_sections(res) + _tau_section(res)
    md += _attention_section(res, cfg) + _diagnostics_section(res, steps, cfg)
    md += ["", "## Figures", ""] + [f"![{p.stem}]({p.name})" for p in figs]
    md += ["", f"Numbers from `dtp analyze {run}`; raw rows in `{run}/episodes.jsonl` and `steps.jsonl`; all statistics in `stats.json`."]
    path = out / "report.md"
    path.write_text("\n".join(md) + "\n")
    return path
