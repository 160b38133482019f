"""Region sources in evaluation: the loop feeds the oracle, names and the store carry the source,
the report shows it, and the CLI takes --region."""

import json
import math

import numpy as np
import pytest
import torch

from dtp.cli import main
from dtp.config import DTPConfig
from dtp.errors import ConfigError
from dtp.eval import EvalSpec, RunStore, config_name, sweep_configs
from dtp.eval.episode import named_object_labels, region_scores
from dtp.analysis.report import _tau_series, write_report
from dtp.policy import StepRecord


def test_config_names_carry_the_region():
    assert config_name(DTPConfig(enabled=False, region="oracle")) == "baseline"
    assert config_name(DTPConfig(tau=0.5)) == "dtp@tau=0.5"
    assert config_name(DTPConfig(region="oracle")) == "oracle@tau=1"
    assert config_name(DTPConfig(ablation="random_outside")) == "random_outside@tau=1"
    assert config_name(DTPConfig(region="oracle", ablation="random_outside")) == "random_outside/oracle@tau=1"
    names = list(sweep_configs([0.5, 1.0], ablations=("random_anywhere", "similarity", "oracle")))
    assert names == ["baseline", "dtp@tau=0.5", "dtp@tau=1", "random_anywhere@tau=1", "similarity@tau=1", "oracle@tau=1"]
    cfgs = sweep_configs([0.5, 1.0], base=DTPConfig(region="oracle"), ablations=("random_outside", "oracle", "attention"))
    assert list(cfgs) == ["baseline", "oracle@tau=0.5", "oracle@tau=1", "random_outside/oracle@tau=1", "dtp@tau=1"]
    assert cfgs["random_outside/oracle@tau=1"].region == "oracle" and cfgs["dtp@tau=1"].region == "attention"
    assert _tau_series("oracle@tau=0.5") == ("oracle", 0.5) and _tau_series("dtp@tau=2") == ("attention", 2.0)
    assert _tau_series("random_outside/oracle@tau=1") is None and _tau_series("dtp") is None


def test_eval_refuses_a_source_the_benchmark_cannot_feed():
    with pytest.raises(ConfigError, match="region='mask' needs obs\\['region_mask'\\]"):
        EvalSpec(configs={"baseline": DTPConfig(enabled=False), "mask": DTPConfig(region="mask")})


def test_region_scores_known_answer():
    seg = np.zeros((4, 4), dtype=np.uint8)
    seg[0, 0] = 1  # object: patch (0, 0)
    seg[0, 3] = seg[3, 3] = 2  # goal: patches (0, 1), (1, 1)
    seg[3, 0] = 4  # distractor: patch (1, 0)
    rec = StepRecord(step=0, region=torch.tensor([[True, True], [False, False]]),
                     pruned=torch.tensor([[False, False], [True, False]]))
    s = region_scores(rec, seg)
    assert s["gt_task_patches"] == 3 and s["gt_object_patches"] == 1 and s["gt_distractor_patches"] == 1
    assert math.isclose(s["g_covers_task"], 2 / 3, rel_tol=1e-6) and s["g_covers_object"] == 1.0
    assert s["d_covers_distractors"] == 1.0 and s["d_on_task"] == 0.0
    goal = region_scores(rec, seg, object_labels=(2,))
    assert goal["gt_object_patches"] == 2 and goal["g_covers_object"] == 0.5
    assert math.isnan(region_scores(rec, np.zeros((4, 4), dtype=np.uint8))["g_covers_object"])


def test_where_g_and_d_lie_known_answer():
    seg = np.zeros((4, 4), dtype=np.uint8)  # 2x2 patches of 2x2 pixels
    seg[0:2, 0:2] = 6  # patch (0, 0): all robot
    seg[0, 2] = 6  # patch (0, 1): one robot pixel, one gripper pixel, the rest background
    seg[1, 3] = 3
    seg[2:4, 0:2] = 4  # patch (1, 0): a distractor
    seg[2, 2] = seg[2, 3] = seg[3, 2] = 1  # patch (1, 1): mostly the task object
    seg[3, 3] = 7  # ... and one pixel of an added distractor
    rec = StepRecord(step=0, region=torch.tensor([[False, False], [False, True]]),
                     pruned=torch.tensor([[True, True], [True, False]]))
    s = region_scores(rec, seg)
    assert s["d_major_robot"] == pytest.approx(1 / 3) and s["d_major_background"] == pytest.approx(1 / 3)
    assert s["d_major_distractors"] == pytest.approx(1 / 3) and s["d_major_task"] == 0.0
    assert s["d_any_robot"] == pytest.approx(2 / 3) and s["d_any_gripper"] == pytest.approx(1 / 3)
    assert s["d_any_background"] == pytest.approx(1 / 3)
    assert s["g_major_task"] == 1.0 and s["g_major_robot"] == 0.0
    # the added distractor counts among the distractors the D-coverage scores
    assert s["gt_distractor_patches"] == 2 and s["d_covers_distractors"] == 0.5
    empty = StepRecord(step=0, region=torch.zeros(2, 2, dtype=torch.bool), pruned=torch.zeros(2, 2, dtype=torch.bool))
    assert math.isnan(region_scores(empty, seg)["d_major_robot"])


def test_named_object_is_the_goal_where_the_task_has_no_object():
    from dtp.envs import get_task

    class Env:
        def __init__(self, name):
            self.task = get_task(name)

    assert named_object_labels(Env("reach")) == (2,)
    assert named_object_labels(Env("push")) == (1,)


def test_cli_eval_with_the_oracle_region_and_its_report(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "oracle"
    rc = main(["eval", "--model", str(tiny_checkpoint), "--tasks", "push", "--episodes", "1", "--max-steps", "3",
               "--region", "oracle", "--tau", "0.2", "--out", str(out)])
    assert rc == 0
    store = RunStore(out)
    eps, steps = store.episodes(), store.steps()
    assert {e["config"] for e in eps} == {"baseline", "oracle"} and all(e["region"] == "oracle" for e in eps)
    assert store.config()["configs"]["oracle"]["region"] == "oracle"
    # the loop fed the segmentation of each frame: the oracle's G is exactly the scored task patches
    scored = [s for s in steps if s["gt_task_patches"]]
    assert len(scored) == len(steps) == 6
    assert all(s["n_region"] == s["gt_task_patches"] and s["g_covers_task"] == 1.0 for s in scored)
    assert all(s["g_covers_object"] == 1.0 for s in scored if s["gt_object_patches"])
    report = write_report(out).read_text()
    assert "| oracle | oracle | " in report and "| baseline | oracle | " in report
    assert "G covers the named object" in report
    stats = json.loads((out / "report" / "stats.json").read_text())
    assert stats["region_by_config"] == {"baseline": "oracle", "oracle": "oracle"}
    assert stats["diagnostics"]["oracle"]["g_covers_task"] == 1.0
    # every patch of G has one majority class: the shares add up to one
    d = stats["diagnostics"]["oracle"]
    assert sum(d[f"g_major_{c}"] for c in ("robot", "gripper", "task", "distractors", "background")) == pytest.approx(1)
    assert "## Where G and D lie" in report


@pytest.mark.parametrize(
    "extra,match",
    [
        (["--region", "mask"], "needs obs['region_mask']"),
        (["--region", "oracle", "--relevance", "similarity"], "conflict"),
        (["--region", "saliency"], "invalid choice: 'saliency'"),
    ],
)
def test_cli_region_mistakes_are_one_line(tiny_checkpoint, tmp_path, capsys, extra, match):
    try:
        rc = main(["eval", "--model", str(tiny_checkpoint), "--tasks", "push", "--episodes", "1", "--max-steps", "1",
                   "--out", str(tmp_path / "x"), *extra])
    except SystemExit as e:  # argparse's own refusals (an unknown --region choice)
        rc = e.code
    err = capsys.readouterr().err.strip()
    assert rc == 2 and match in err and len(err.splitlines()) == 1


def test_a_run_written_before_region_still_resumes(tiny_checkpoint, tmp_path):
    from dtp.eval import run_eval

    spec = EvalSpec(model=str(tiny_checkpoint), tasks=("push",), episodes=1, max_steps=1,
                    configs={"baseline": DTPConfig(enabled=False), "dtp": DTPConfig(tau=0.2)})
    out = tmp_path / "old"
    run_eval(spec, out, progress=False)
    path = out / "config.json"
    old = json.loads(path.read_text())
    for c in old["configs"].values():
        c["relevance"] = c.pop("region")  # as written before `region` existed
    path.write_text(json.dumps(old))
    assert len(run_eval(spec, out, progress=False).episodes()) == 2  # resumed, nothing rerun
    other = EvalSpec(**{**spec.__dict__, "configs": {"baseline": DTPConfig(enabled=False),
                                                     "dtp": DTPConfig(tau=0.2, region="oracle")}})
    with pytest.raises(ConfigError, match="different run"):
        run_eval(other, out, progress=False)


def test_layers_are_chosen_only_for_ranked_sources():
    from dtp.experiments.layer_choice import choose_layers

    with pytest.raises(ConfigError, match="uses no layers"):
        choose_layers(object(), lambda task: None, ["reach"], relevance="oracle")
