"""Evaluation runs append per episode, resume without duplicates (also after a real kill), and report."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from dtp.config import DTPConfig
from dtp.errors import ConfigError
from dtp.eval import EvalSpec, RunStore, run_eval, sweep_configs


def _spec(ck, **kw):
    base = dict(model=str(ck), tasks=("push",), episodes=2, max_steps=3,
                configs={"baseline": DTPConfig(enabled=False), "dtp": DTPConfig(tau=0.2)})
    return EvalSpec(**{**base, **kw})


def test_paired_seeds_and_job_order():
    spec = EvalSpec(configs=sweep_configs([0.5, 1.0]), episodes=3, episodes_by_config={"baseline": 5})
    jobs = spec.jobs()
    seeds_of = lambda c: [j.seed for j in jobs if j.config == c and j.task == "push"]  # noqa: E731
    assert seeds_of("baseline")[:3] == seeds_of("dtp@tau=0.5") == seeds_of("random_outside@tau=1")
    assert len(seeds_of("baseline")) == 5 and len(set(j.key for j in jobs)) == len(jobs)


def test_run_appends_resumes_and_reports(tiny_checkpoint, tmp_path):
    spec = _spec(tiny_checkpoint)
    store = run_eval(spec, tmp_path / "run", progress=False)
    eps, steps = store.episodes(), store.steps()
    assert len(eps) == 4 and {e["config"] for e in eps} == {"baseline", "dtp"}
    assert len(steps) == sum(e["length"] for e in eps)
    assert all("irrelevant_fraction" in s and "g_covers_task" in s for s in steps)
    # rerun: nothing new, nothing duplicated
    store = run_eval(spec, tmp_path / "run", progress=False)
    assert len(store.episodes()) == 4
    lines = (tmp_path / "run" / "episodes.jsonl").read_text().splitlines()
    assert len(lines) == 4
    # a different config in the same folder is refused
    with pytest.raises(ConfigError, match="different run"):
        run_eval(_spec(tiny_checkpoint, episodes=3), tmp_path / "run", progress=False)
    from dtp.analysis.report import write_report

    report = write_report(tmp_path / "run")
    text = report.read_text()
    assert "McNemar" in text and (report.parent / "success_by_config.png").is_file()
    stats = json.loads((report.parent / "stats.json").read_text())
    assert stats["episodes"] == 4 and "dtp" in stats["paired_vs_baseline"]


def test_torn_line_and_orphan_steps_are_dropped(tmp_path):
    store = RunStore(tmp_path).open({"a": 1})
    store.append({"key": "k1", "success": True}, [{"step": 0}, {"step": 1}])
    with (tmp_path / "steps.jsonl").open("a") as f:  # the in-flight episode died mid-write
        f.write(json.dumps({"step": 0, "key": "k2"}) + "\n" + '{"step": 1, "ke')
    store = RunStore(tmp_path).open({"a": 1})
    assert [s["key"] for s in store.steps()] == ["k1", "k1"]
    assert (tmp_path / "steps.jsonl").read_text().endswith("\n")


def test_real_kill_then_resume(tiny_checkpoint, tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "dtp.cli", "eval", "--model", str(tiny_checkpoint), "--tasks", "push",
           "--episodes", "4", "--max-steps", "3", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    episodes = out / "episodes.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline:
        if episodes.exists() and len(episodes.read_text().splitlines()) >= 2:
            break
        if proc.poll() is not None:
            pytest.fail("the eval finished before it could be killed")
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = len(RunStore(out).episodes())
    assert 2 <= before < 8
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = RunStore(out)
    keys = [e["key"] for e in store.episodes()]
    assert len(keys) == 8 == len(set(keys))
    assert len(episodes.read_text().splitlines()) == 8
    assert len(store.steps()) == sum(e["length"] for e in store.episodes())


def test_jobs_scene_major_and_only():
    """A run stopped part-way holds the first scenes of every task; `only` keeps the named configs."""
    spec = EvalSpec(tasks=("push", "reach"), configs=sweep_configs([1.0]), episodes=2,
                    episodes_by_config={"baseline": 3})
    jobs = spec.jobs()
    first_reach = next(i for i, j in enumerate(jobs) if j.task == "reach")
    assert all(j.seed == jobs[0].seed for j in jobs[:first_reach + 1])  # reach's scene 0 before push's scene 1
    only = spec.jobs(("baseline", "oracle@tau=1"))
    assert {j.config for j in only} == {"baseline", "oracle@tau=1"}
    assert [j.key for j in only] == [j.key for j in jobs if j.config in ("baseline", "oracle@tau=1")]
    assert sum(j.config == "baseline" for j in only) == 6
    with pytest.raises(ConfigError, match="no config named 'dtp@tau=2'"):
        spec.jobs(("dtp@tau=2",))


def test_only_runs_a_subset_and_a_rerun_completes(tiny_checkpoint, tmp_path):
    spec = _spec(tiny_checkpoint)
    with pytest.raises(ConfigError, match="no config named"):
        run_eval(spec, tmp_path / "bad", progress=False, only=("nope",))
    assert not (tmp_path / "bad").exists()
    store = run_eval(spec, tmp_path / "run", progress=False, only=("dtp",))
    assert {e["config"] for e in store.episodes()} == {"dtp"} and len(store.episodes()) == 2
    store = run_eval(spec, tmp_path / "run", progress=False)
    assert len(store.episodes()) == 4
