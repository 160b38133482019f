"""`dtp robustness` end to end on a tiny random TinyVLA: three paired configs, the counts pruned,
the summary's figures recomputed from the run folder, resume, and one-line mistakes."""

import json

import pytest

from dtp.cli import main
from dtp.eval import RunStore
from dtp.experiments.robustness import BASELINE, RANDOM, TOP, robustness_summary

FAST = ["--tasks", "push", "--episodes", "2", "--max-steps", "3", "--variant", "plain"]


def test_robustness_command_runs_paired_configs_and_summarises(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "rob"
    rc = main(["robustness", "--model", str(tiny_checkpoint), *FAST, "--out", str(out), "--json"])
    assert rc == 0
    text = capsys.readouterr().out
    summary = json.loads(text.strip().splitlines()[-1])
    store = RunStore(out)
    eps, steps = store.episodes(), store.steps()
    assert store.config()["seed"] == 1  # the validation seed set by default
    assert sorted(e["config"] for e in eps) == sorted([BASELINE, RANDOM, TOP] * 2)
    # same scenes: one seed pair per episode index across the configs
    assert {e["seed"] for e in eps if e["config"] == RANDOM} == {e["seed"] for e in eps if e["config"] == BASELINE}
    for s in steps:
        outside = s["grid_h"] * s["grid_w"] - s["n_region"]
        want = 0 if s["config"] == BASELINE else round(0.25 * outside)
        assert s["n_pruned"] == want and s["prompt_argmax"] >= 0
    # the summary is what the run folder says
    assert summary == json.loads(json.dumps({**robustness_summary(eps, steps), "fraction": 0.25, "seed": 1,
                                             "variant": "plain", "run_dir": str(out)}))
    base = summary["all"]["success"][BASELINE]
    assert base["episodes"] == 2 and base["successes"] == sum(e["success"] for e in eps if e["config"] == BASELINE)
    sink = summary["sink"]
    firsts = [s for s in steps if s["config"] == BASELINE and s["step"] == 0]
    assert sink["frames"] == 2 and sink["top_patch"] in {s["prompt_argmax"] for s in firsts}
    assert "sink all (first step of each episode, 2 frames)" in text
    assert summary["per_task"]["push"]["sink"] == sink
    # rerunning resumes: nothing new runs, same numbers
    rc = main(["robustness", "--model", str(tiny_checkpoint), *FAST, "--out", str(out), "--json",
               "--sink-every", "1"])
    assert rc == 0 and len(RunStore(out).episodes()) == 6
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["all"] == summary["all"] and again["sink"]["frames"] == len([s for s in steps if s["config"] == BASELINE])


@pytest.mark.parametrize("extra,match", [(["--fraction", "0"], "share in (0, 1]"),
                                         (["--fraction", "x"], "share in (0, 1]"),
                                         (["--workers", "2"], "--runner ray")])
def test_robustness_mistakes_are_one_line(tiny_checkpoint, tmp_path, capsys, extra, match):
    try:
        rc = main(["robustness", "--model", str(tiny_checkpoint), *FAST, "--out", str(tmp_path / "x"), *extra])
    except SystemExit as e:
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2 and match in err and "Traceback" not in err and not (tmp_path / "x").exists()


def test_summary_refuses_a_run_without_the_three_configs():
    from dtp.errors import ConfigError

    with pytest.raises(ConfigError, match="robustness run"):
        robustness_summary([{"config": "baseline", "task": "push", "seed": 1, "success": True}], [])
