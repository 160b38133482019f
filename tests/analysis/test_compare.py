"""`dtp compare`: the headline of a run (baseline / DTP / random / oracle, paired tests) on a
hand-made run folder with known answers, and its checks."""

import json

import pytest

from dtp.errors import ConfigError
from dtp.eval import RunStore
from dtp.analysis.compare import default_dtp, format_comparison, headline, write_comparison


def _run(path, outcomes: dict[str, list[bool]], main=("baseline", "dtp@tau=1"), irrelevant=None):
    """A run folder whose config c succeeded on scene i iff outcomes[c][i] (task push)."""
    store = RunStore(path).open({"model": "m", "variant": "grounded", "palette": "ood", "seed": 0,
                                 "distractors": 3, "episodes_by_config": {c: 1 for c in main}})
    for c, wins in outcomes.items():
        for i, ok in enumerate(wins):
            irr = (0.3 if ok else 0.7) if irrelevant is None else irrelevant
            store.append({"key": f"{c}|push|{i}", "config": c, "task": "push", "seed": i, "success": ok,
                          "mean_irrelevant_fraction": irr}, [])
    return path


def test_headline_known_answer(tmp_path):
    b = [True] * 2 + [False] * 8
    d = [True] * 2 + [True] * 5 + [False] * 3      # DTP solves 5 scenes the baseline failed
    r = [True] * 2 + [False] * 8                    # random solves what the baseline did
    o = [True] * 7 + [True] * 2 + [False]           # oracle adds two more over DTP
    run = _run(tmp_path / "run", {"baseline": b, "dtp@tau=1": d, "random_outside@tau=1": r, "oracle@tau=1": o,
                                  "dtp@tau=0.5": b})
    h = headline(run)
    assert h["roles"] == {"baseline": "baseline", "dtp": "dtp@tau=1", "random": "random_outside@tau=1",
                          "oracle": "oracle@tau=1"}
    assert [h["success"][k]["successes"] for k in ("baseline", "dtp", "random", "oracle")] == [2, 7, 2, 9]
    t = h["tests"]
    assert (t["dtp_vs_baseline"]["b_only"], t["dtp_vs_baseline"]["a_only"]) == (5, 0)
    assert t["dtp_vs_baseline"]["p_value"] == pytest.approx(2 * 0.5 ** 5)
    assert (t["dtp_vs_random"]["b_only"], t["dtp_vs_random"]["a_only"]) == (5, 0)  # b = DTP
    assert (t["oracle_vs_dtp"]["b_only"], t["oracle_vs_dtp"]["a_only"]) == (2, 0)
    assert t["oracle_vs_dtp"]["b_rate"] == pytest.approx(0.9)
    mw = h["mann_whitney_baseline"]
    assert (mw["n_fail"], mw["n_success"]) == (8, 2) and mw["p_greater"] < 0.05
    # the configs outside the four roles, paired with the baseline; the test-set best tau
    assert set(h["others"]) == {"dtp@tau=0.5"}
    o = h["others"]["dtp@tau=0.5"]
    t = o["vs_baseline"]  # a = baseline, b = the config
    assert (o["successes"], t["pairs"], t["a_only"], t["b_only"], t["p_value"]) == (2, 10, 0, 0, 1.0)
    assert h["best_tau"]["tau"] == 1.0 and h["best_tau"]["rate"] == pytest.approx(0.7)
    assert "| x | `dtp@tau=0.5` | 20.0% [5.7%, 51.0%] (2/10) | 10 | 20.0% | 0 | 0 | 1 |" in format_comparison({"x": h})


def test_default_dtp_rules():
    configs = ["baseline", "dtp@tau=0.5", "dtp@tau=1", "random_outside@tau=1"]
    assert default_dtp({"episodes_by_config": {"baseline": 75, "dtp@tau=0.5": 75}}, configs) == "dtp@tau=0.5"
    assert default_dtp({}, configs) == "dtp@tau=1"  # the tau the ablations ran at
    assert default_dtp({}, ["baseline", "dtp"]) == "dtp"  # dtp eval
    assert default_dtp({}, ["baseline", "dtp@tau=0.5", "dtp@tau=1"]) is None  # ambiguous


def test_write_comparison_and_its_checks(tmp_path):
    a = _run(tmp_path / "a", {"baseline": [True, False], "dtp@tau=1": [True, True]})
    out = write_comparison({"grounded": a, "plain": a}, tmp_path / "cmp" / "headline.md")
    text = out.read_text()
    assert "| grounded |" in text and "| plain |" in text and "DTP > baseline?" in text
    assert "DTP > random?" not in text  # no random config in the run: no row, not a made-up one
    assert "Every other config" not in text  # nothing beyond baseline and DTP
    assert "- grounded: tau = 1 (attention region), 100.0% against the baseline's 50.0% on 2 scenes" in text
    assert set(json.loads(out.with_suffix(".json").read_text())) == {"grounded", "plain"}
    assert out.with_suffix(".png").stat().st_size > 1000
    with pytest.raises(ConfigError, match="Markdown"):
        write_comparison({"a": a}, tmp_path / "x.txt")
    with pytest.raises(ConfigError, match="not a run folder"):
        write_comparison({"a": a, "b": tmp_path / "nothere"}, tmp_path / "y.md")
    assert not any((tmp_path / f"y.{ext}").exists() for ext in ("md", "json", "png"))
    nodtp = _run(tmp_path / "nodtp", {"baseline": [True]}, main=("baseline",))
    with pytest.raises(ConfigError, match="needs a baseline and one DTP config"):
        write_comparison({"a": nodtp}, tmp_path / "z.md")


def test_compare_cli_errors(tmp_path, capsys):
    from dtp.cli import main

    a = _run(tmp_path / "a", {"baseline": [True, False], "dtp@tau=1": [True, True]})
    for argv, msg in ((["compare", str(a), "--out", str(tmp_path / "h.md")], "NAME=FOLDER"),
                      (["compare", f"x={a}", f"x={a}", "--out", str(tmp_path / "h.md")], "given twice")):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and msg in err[0]
    assert main(["compare", f"grounded={a}", "--out", str(tmp_path / "h.md")]) == 0
    assert (tmp_path / "h.md").is_file()


def test_tau_curve_compares_taus_on_common_scenes(tmp_path):
    """A tau run on more scenes (the main one) is scored on the scenes every tau ran, not its own."""
    from dtp.analysis.report import analyse

    store = RunStore(tmp_path / "run").open({"episodes_by_config": {"baseline": 4, "dtp@tau=1": 4}})
    rows = {"baseline": [False] * 4, "dtp@tau=1": [False, False, True, True], "dtp@tau=0.5": [True, False]}
    for c, wins in rows.items():
        for i, ok in enumerate(wins):
            store.append({"key": f"{c}|push|{i}", "config": c, "task": "push", "seed": i, "success": ok}, [])
    res = analyse(tmp_path / "run")
    curve = {r["tau"]: r for r in res["tau_curve"]}
    assert curve[1.0]["scenes"] == curve[0.5]["scenes"] == 2
    assert curve[1.0]["rate"] == 0.0 and curve[0.5]["rate"] == 0.5  # on its own 4 scenes tau = 1 would show 50%
    assert res["best_tau"]["tau"] == 0.5 and res["best_tau"]["baseline_rate"] == 0.0
