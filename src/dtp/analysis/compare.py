"""`dtp compare`: the headline of several run folders side by side (e.g. a grounded and a plain model).

Per run: baseline, DTP at the run's default tau, random pruning at that tau and DTP over the
oracle region, each with its 95% Wilson interval; the paired exact McNemar tests the issue asks
for (DTP vs baseline, DTP vs random, oracle vs DTP); the Mann-Whitney test of the paper's
Fig. 2 (baseline failures carry more attention outside G than successes); every other config of
the run (tau grid, ablations) paired with the baseline; and the test-set best tau, the paper's
"upper bound".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .report import _fmt, _tau_series, analyse
from ..eval.store import CONFIG, RunStore

RANDOM_CONFIGS = ("random_outside", "random_anywhere")  # the random control, in order of preference


def default_dtp(spec: dict[str, Any], configs: list[str]) -> str | None:
    """The run's DTP at its default tau: the attention DTP config given the main episode count, else
    the one at the tau its ablations ran at (sweep_configs runs them at the default), else the only one."""
    dtp = [c for c in configs if c == "dtp" or ((ts := _tau_series(c)) is not None and ts[0] == "attention")]
    main = [c for c in dtp if c in spec.get("episodes_by_config", {})]
    if len(main) == 1:
        return main[0]
    ablation_taus = {c.partition("@tau=")[2] for c in configs if "@tau=" in c and not c.startswith("dtp@")}
    if len(ablation_taus) == 1 and (at := f"dtp@tau={ablation_taus.pop()}") in dtp:
        return at
    return dtp[0] if len(dtp) == 1 else None


def headline(run_dir: str | Path) -> dict[str, Any]:
    """One run's headline: success of baseline / DTP / random / oracle and the paired tests."""
    run = Path(run_dir)
    if not (run / "episodes.jsonl").is_file():
        raise ConfigError(f"{run} holds no episodes.jsonl; give a folder written by `dtp eval` or `dtp sweep`")
    spec = RunStore(run).config()
    res = analyse(run)
    configs = res["configs"]
    dtp = default_dtp(spec, configs)
    if "baseline" not in configs or dtp is None:
        raise ConfigError(f"{run} needs a baseline and one DTP config at a default tau; it has {', '.join(configs)}")
    tau = dtp.partition("@tau=")[2]
    roles = {"baseline": "baseline", "dtp": dtp}
    random = next((f"{r}@tau={tau}" for r in RANDOM_CONFIGS if f"{r}@tau={tau}" in configs), None)
    if random:
        roles["random"] = random
    if f"oracle@tau={tau}" in configs:
        roles["oracle"] = f"oracle@tau={tau}"
    rows = {r["config"]: r for r in res["success_by_config"]}
    vs_dtp = res["paired_vs_dtp"]  # DTP is the first config of these pairs, the ablation the second
    tests = {"dtp_vs_baseline": _test("baseline", dtp, res["paired_vs_baseline"][dtp], "baseline_rate", "config_rate")}
    if random:  # DTP > random: DTP second, so the pair's roles swap
        m = vs_dtp[random]
        tests["dtp_vs_random"] = _test(random, dtp, {**m, "a_only": m["b_only"], "b_only": m["a_only"]},
                                       "config_rate", "dtp_rate")
    if "oracle" in roles:
        tests["oracle_vs_dtp"] = _test(dtp, roles["oracle"], vs_dtp[roles["oracle"]], "dtp_rate", "config_rate")
    others = {}  # every config outside the four roles (tau grid, ablations), paired with the baseline
    for c in configs:
        if c not in roles.values():
            others[c] = {**rows[c], "vs_baseline": _test("baseline", c, res["paired_vs_baseline"][c],
                                                         "baseline_rate", "config_rate")}
    return {
        "run": str(run), "model": spec.get("model"), "variant": spec.get("variant"), "palette": spec.get("palette"),
        "seed": spec.get("seed"), "distractors": spec.get("distractors"),
        "roles": roles, "success": {role: rows[c] for role, c in roles.items()},
        "tests": tests, "mann_whitney_baseline": res["mann_whitney"].get("baseline|all"),
        "g_covers_named_object_baseline": (res["diagnostics"].get("baseline") or {}).get("g_covers_object"),
        "others": others, "best_tau": res.get("best_tau"),
    }


def _test(a: str, b: str, m: dict[str, Any], a_rate: str, b_rate: str) -> dict[str, Any]:
    """A paired test of config b against config a: McNemar counts (b_only: only b succeeded) and rates."""
    return {"a": a, "b": b, "pairs": m["pairs"], "a_only": m["a_only"], "b_only": m["b_only"],
            "p_value": m["p_value"], "a_rate": m[a_rate], "b_rate": m[b_rate]}


def _pct(x: float | None) -> str:
    return _fmt(x, pct=True)


def format_comparison(heads: dict[str, dict[str, Any]]) -> str:
    """Markdown: a success table (rate, 95% CI, n) and a table of the paired tests, one row per run."""
    roles = ("baseline", "dtp", "random", "oracle")
    md = ["| model | " + " | ".join(roles) + " |", "|---|" + "---|" * len(roles)]
    for name, h in heads.items():
        cells = []
        for r in roles:
            row = h["success"].get(r)
            cells.append("-" if row is None else f"{_pct(row['rate'])} [{_pct(row['ci_low'])}, {_pct(row['ci_high'])}] "
                                                   f"({row['successes']}/{row['episodes']}, `{row['config']}`)")
        md.append(f"| {name} | " + " | ".join(cells) + " |")
    md += ["", "Paired on the same scenes, exact McNemar (two-sided): 'B only' counts scenes only the second config "
           "solved. Mann-Whitney: baseline episodes, attention share outside G, failures > successes (one-sided).", "",
           "| model | test | pairs | first | second | A only | B only | p |", "|---|---|---|---|---|---|---|---|"]
    names = {"dtp_vs_baseline": "DTP > baseline?", "dtp_vs_random": "DTP > random?", "oracle_vs_dtp": "oracle > DTP?"}
    for name, h in heads.items():
        for key, label in names.items():
            t = h["tests"].get(key)
            if t:
                md.append(f"| {name} | {label} | {t['pairs']} | `{t['a']}` {_pct(t['a_rate'])} | "
                          f"`{t['b']}` {_pct(t['b_rate'])} | {t['a_only']} | {t['b_only']} | {_fmt(t['p_value'])} |")
        mw = h.get("mann_whitney_baseline")
        if mw:
            md.append(f"| {name} | failures: more attention outside G? | {mw['n_fail']} fail / {mw['n_success']} success | "
                      f"fail {_fmt(mw['mean_fail'])} | success {_fmt(mw['mean_success'])} | | | {_fmt(mw['p_greater'])} |")
    if any(h.get("others") for h in heads.values()):
        md += ["", "Every other config of the run (tau grid, ablations), paired with the baseline on the scenes both "
               "ran (exact McNemar, two-sided):", "",
               "| model | config | success | pairs | baseline on them | only baseline solved | only config solved | p |",
               "|---|---|---|---|---|---|---|---|"]
        for name, h in heads.items():
            for c, o in (h.get("others") or {}).items():
                t = o["vs_baseline"]
                md.append(f"| {name} | `{c}` | {_pct(o['rate'])} [{_pct(o['ci_low'])}, {_pct(o['ci_high'])}] "
                          f"({o['successes']}/{o['episodes']}) | {t['pairs']} | {_pct(t['a_rate'])} | "
                          f"{t['a_only']} | {t['b_only']} | {_fmt(t['p_value'])} |")
    best = {name: h["best_tau"] for name, h in heads.items() if h.get("best_tau")}
    if best:
        md += ["", "Best tau on these scenes (the paper's 'upper bound': chosen on the seeds it is scored on, not a "
               "held-out result), on the scenes every tau and the baseline ran:", ""]
        for name, b in best.items():
            md.append(f"- {name}: tau = {b['tau']:g} ({b['region']} region), {_pct(b['rate'])} against the baseline's "
                      f"{_pct(b['baseline_rate'])} on {b['scenes']} scenes")
    return "\n".join(md) + "\n"


def plot_comparison(heads: dict[str, dict[str, Any]], path: Path) -> Path:
    """Grouped bars: success of baseline / DTP / random / oracle per run, with 95% Wilson intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from .heatmaps import save_figure

    roles = ("baseline", "dtp", "random", "oracle")
    colours = {"baseline": "#888", "dtp": "#3a7", "random": "#c93", "oracle": "#37b"}
    fig, ax = plt.subplots(figsize=(1.9 + 1.6 * len(heads), 3.4))
    width = 0.8 / len(roles)
    for i, role in enumerate(roles):
        xs, rates, lo, hi = [], [], [], []
        for j, h in enumerate(heads.values()):
            row = h["success"].get(role)
            if row is not None:
                xs.append(j + (i - 1.5) * width)
                rates.append(row["rate"])
                lo.append(row["rate"] - row["ci_low"])
                hi.append(row["ci_high"] - row["rate"])
        if xs:
            ax.bar(xs, rates, width, yerr=[lo, hi], capsize=2, color=colours[role], label=role)
    ax.set_xticks(np.arange(len(heads)), list(heads))
    ax.set_ylim(0, 1)
    ax.set_ylabel("success rate")
    ax.set_title("success per config (95% Wilson)")
    ax.legend(fontsize=8, ncol=2)
    return save_figure(fig, path)


def write_comparison(runs: dict[str, str | Path], out: str | Path) -> Path:
    """Write OUT (Markdown), OUT with .json (every number of it) and .png (the success bars);
    check every run first."""
    out = Path(out)
    if out.suffix.lower() != ".md":
        raise ConfigError(f"--out names a Markdown file (.md), got {out}")
    for run in runs.values():
        if not (Path(run) / CONFIG).is_file():
            raise ConfigError(f"{run} is not a run folder (no {CONFIG}); give folders written by `dtp eval` or `dtp sweep`")
    heads = {name: headline(run) for name, run in runs.items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(heads, indent=1, default=float))
    plot_comparison(heads, out.with_suffix(".png"))
    out.write_text(format_comparison(heads) + f"\n![success per config]({out.with_suffix('.png').name})\n")
    return out
