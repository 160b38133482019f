"""`--batch N`: several episodes stepped together give the episodes of `--batch 1`, row for row."""

import json
import math

import pytest

from dtp.cli import main
from dtp.config import DTPConfig
from dtp.errors import ConfigError
from dtp.eval import EvalSpec, run_eval

# timings, and the capture's byte count (a batched pass 1 captures rows padded to the batch's longest prompt)
TIMINGS = ("wall_s", "policy_s", "env_s", "segmentation_s", "capture_bytes")


def _rows(path, timing_keys=TIMINGS) -> dict:
    """Rows by (key, step) without timings."""
    out = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        row = {k: v for k, v in row.items() if k not in timing_keys and not k.endswith("_s")}
        out[(row["key"], row.get("step"))] = row
    return out


def _same(a, b) -> bool:
    """Equal, floats within batched-matmul rounding (the attention statistics; actions decode from bins)."""
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _assert_same_rows(batched: dict, single: dict) -> None:
    assert batched.keys() == single.keys()
    for key, row in single.items():
        other = batched[key]
        assert row.keys() == other.keys(), key
        bad = {f: (row[f], other[f]) for f in row if not _same(row[f], other[f])}
        assert not bad, (key, bad)
        assert row.get("tokens") == other.get("tokens") and row.get("n_pruned") == other.get("n_pruned")


@pytest.mark.parametrize("batch,env_processes", [(3, False), (8, False), pytest.param(3, True, marks=pytest.mark.slow)])
def test_batched_rollouts_equal_one_at_a_time(tiny_checkpoint, tmp_path, batch, env_processes):
    """Episodes of different lengths and configs finish at different steps; DTP fires on some steps only.
    With env_processes each env steps in a child process while the other configs' policy runs."""
    spec = EvalSpec(model=str(tiny_checkpoint), tasks=("push", "reach"), episodes=3, max_steps=6,
                    configs={"baseline": DTPConfig(enabled=False), "dtp": DTPConfig(tau=1.0),
                             "random": DTPConfig(tau=1.0, ablation="random_outside")})
    one = run_eval(spec, tmp_path / "one", progress=False)
    many = run_eval(spec, tmp_path / f"b{batch}", progress=False, batch=batch, env_processes=env_processes)
    assert len(many.episodes()) == len(one.episodes()) == 18
    for name in ("episodes.jsonl", "steps.jsonl"):
        _assert_same_rows(_rows(tmp_path / f"b{batch}" / name), _rows(tmp_path / "one" / name))
    fired = [s["fired"] for s in one.steps() if s["config"] == "dtp"]
    assert any(fired) and not all(fired)  # a mixed batch: some samples run pass 2, some do not


@pytest.mark.slow
def test_one_config_in_two_halves_with_env_processes(tiny_checkpoint, tmp_path):
    """A lone config's episodes step as two halves (one half's envs step while the other's policy runs):
    still the episodes of --batch 1."""
    spec = EvalSpec(model=str(tiny_checkpoint), tasks=("push",), episodes=3, max_steps=4,
                    configs={"dtp": DTPConfig(tau=1.0)})
    run_eval(spec, tmp_path / "one", progress=False)
    run_eval(spec, tmp_path / "many", progress=False, batch=3, env_processes=True)
    for name in ("episodes.jsonl", "steps.jsonl"):
        _assert_same_rows(_rows(tmp_path / "many" / name), _rows(tmp_path / "one" / name))


def test_subprocess_env_matches_the_env_and_reports_child_errors():
    """The proxy's observations, segmentation and instruction are the in-process env's; a child's error
    reaches the parent with its traceback."""
    import numpy as np

    from dtp.envs.benchmark import benchmark_env
    from dtp.envs.subprocess_env import SubprocessEnv

    kwargs = dict(task="push", distractors=2, palette="train", image_size=32, max_steps=5)
    here, there = benchmark_env(**kwargs), SubprocessEnv(**kwargs)
    try:
        (a, _), (b, _) = here.reset(seed=4), there.reset(seed=4)
        assert there.unwrapped.instruction == here.unwrapped.instruction and there.unwrapped.task == here.unwrapped.task
        action = np.array([0.5, -0.2, 0.1, 1.0], dtype=np.float32)
        there.step_async(action)
        a, b = here.step(action), there.step_wait()
        assert np.array_equal(a[0]["image"], b[0]["image"]) and a[1:4] == b[1:4]
        assert np.array_equal(here.segmentation(), there.segmentation())
    finally:
        here.close()
        there.close()
    with pytest.raises(RuntimeError, match="in the env process"):
        SubprocessEnv(task="no_such_task", distractors=0, palette="train", image_size=32)


def test_batch_is_checked_and_resumes_with_another_batch(tiny_checkpoint, tmp_path):
    spec = EvalSpec(model=str(tiny_checkpoint), tasks=("push",), episodes=2, max_steps=3)
    with pytest.raises(ConfigError, match="batch"):
        run_eval(spec, tmp_path / "bad", progress=False, batch=0)
    assert not (tmp_path / "bad").exists()
    run_eval(spec, tmp_path / "run", progress=False, batch=4, only=("baseline",))
    store = run_eval(spec, tmp_path / "run", progress=False, batch=1)  # the batch is not part of the run's identity
    assert len(store.episodes()) == 4


def test_cli_batch_flag(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["eval", "--model", str(tiny_checkpoint), "--tasks", "push", "--episodes", "2", "--max-steps", "3",
                 "--batch", "4", "--env-processes", "--out", str(out)]) == 0
    assert len((out / "episodes.jsonl").read_text().splitlines()) == 4
    with pytest.raises(SystemExit) as exit_:
        main(["eval", "--model", str(tiny_checkpoint), "--tasks", "push", "--batch", "0", "--out", str(out)])
    assert exit_.value.code == 2 and "--batch" in capsys.readouterr().err
