"""python -m dtp.experiments.pooled: one paired table over the configs of several runs on the same scenes."""

from __future__ import annotations

from dtp.eval.store import RunStore
from dtp.experiments.pooled import markdown, pooled_rows


def _run(path, rows):
    store = RunStore(path).open({"name": str(path)})
    for config, seed, success, pruned in rows:
        store.append({"key": f"{config}|push|{seed}", "config": config, "task": "push", "seed": seed, "success": success},
                     [{"config": config, "task": "push", "seed": seed, "step": 0, "fired": pruned > 0,
                       "n_pruned": pruned, "d_major_robot": 1.0 if pruned else float("nan"),
                       "d_any_robot": 1.0 if pruned else float("nan"), "d_any_distractors": 0.0 if pruned else float("nan")}])
    return path


def test_pooled_pairs_configs_across_runs(tmp_path):
    a = _run(tmp_path / "a", [("baseline", s, s < 2, 0) for s in range(4)] + [("dtp@tau=1", s, s < 1, 2) for s in range(4)])
    b = _run(tmp_path / "b", [("baseline", s, False, 0) for s in range(4)]  # the same episodes: the first run's win
             + [("dtp+robot_motion@tau=1", s, s < 3, 0) for s in range(4)])
    rows = pooled_rows([str(a), str(b)])
    assert list(rows) == ["baseline", "dtp@tau=1", "dtp+robot_motion@tau=1"]
    assert rows["baseline"]["successes"] == 2 and rows["baseline"]["episodes"] == 4
    assert rows["dtp@tau=1"]["vs_reference"]["a_only"] == 1 and rows["dtp@tau=1"]["fired_share"] == 1.0
    assert rows["dtp+robot_motion@tau=1"]["vs_reference"]["b_only"] == 1
    assert "| dtp@tau=1 | 25.0% (1/4)" in markdown(rows, "baseline")


def test_pooled_adds_runs_over_other_tasks(tmp_path):
    a = _run(tmp_path / "a", [("baseline", s, True, 0) for s in range(2)])
    b = _run(tmp_path / "b", [("baseline", s, False, 0) for s in range(2)])
    for e in RunStore(b).episodes():  # the same seeds on another task
        assert e["task"] == "push"
    (tmp_path / "b" / "episodes.jsonl").write_text((tmp_path / "b" / "episodes.jsonl").read_text().replace('"push"', '"reach"'))
    rows = pooled_rows([str(a), str(b)])
    assert rows["baseline"]["episodes"] == 4 and rows["baseline"]["successes"] == 2
