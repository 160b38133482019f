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


@pytest.mark.parametrize("batch", [3, 8])
def test_batched_rollouts_equal_one_at_a_time(tiny_checkpoint, tmp_path, batch):
    """Episodes of different lengths and configs finish at different steps; DTP fires on some steps only."""
    spec = EvalSpec(model=str(tiny_checkpoint), tasks=("push", "reach"), episodes=3, max_steps=6,
                    configs={"baseline": DTPConfig(enabled=False), "dtp": DTPConfig(tau=1.0),
                             "random": DTPConfig(tau=1.0, ablation="random_outside")})
    one = run_eval(spec, tmp_path / "one", progress=False)
    many = run_eval(spec, tmp_path / f"b{batch}", progress=False, batch=batch)
    assert len(many.episodes()) == len(one.episodes()) == 18
    for name in ("episodes.jsonl", "steps.jsonl"):
        _assert_same_rows(_rows(tmp_path / f"b{batch}" / name), _rows(tmp_path / "one" / name))
    fired = [s["fired"] for s in one.steps() if s["config"] == "dtp"]
    assert any(fired) and not all(fired)  # a mixed batch: some samples run pass 2, some do not


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
                 "--batch", "4", "--out", str(out)]) == 0
    assert len((out / "episodes.jsonl").read_text().splitlines()) == 4
    with pytest.raises(SystemExit) as exit_:
        main(["eval", "--model", str(tiny_checkpoint), "--tasks", "push", "--batch", "0", "--out", str(out)])
    assert exit_.value.code == 2 and "--batch" in capsys.readouterr().err
