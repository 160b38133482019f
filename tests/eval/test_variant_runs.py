"""Runs record their benchmark variant; `dtp layers --json` ends with one JSON object."""

import json

import pytest

from dtp.cli import main
from dtp.config import DTPConfig
from dtp.errors import ConfigError
from dtp.eval import EvalSpec, run_eval
from dtp.envs.benchmark import benchmark_env


def test_spec_records_variant_and_old_runs_read_as_plain():
    spec = EvalSpec()
    assert spec.variant == "grounded" and spec.to_dict()["variant"] == "grounded"
    assert EvalSpec.from_dict(EvalSpec(variant="plain").to_dict()).variant == "plain"
    old = spec.to_dict()
    del old["variant"]  # run folders written before variants existed
    assert EvalSpec.from_dict(old).variant == "plain"
    with pytest.raises(ConfigError, match="grounded"):
        EvalSpec(variant="colourful")


def test_benchmark_env_builds_the_variant():
    for variant, named in (("plain", False), ("grounded", True)):
        env = benchmark_env("push", distractors=1, palette="train", image_size=48, variant=variant)
        try:
            obs, _ = env.reset(seed=1_010_000)
            colour = env.scene.task_object.colour
            assert (colour is not None) == named
            if named:
                assert colour in obs["instruction"].split() and env.scene.lookalikes
        finally:
            env.close()


def test_eval_run_config_holds_the_variant(tiny_checkpoint, tmp_path):
    spec = EvalSpec(model=str(tiny_checkpoint), tasks=("reach",), episodes=1, max_steps=2,
                    configs={"baseline": DTPConfig(enabled=False)}, variant="grounded")
    store = run_eval(spec, tmp_path / "run", progress=False)
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["variant"] == "grounded"
    (row,) = store.episodes()
    assert len(set(row["instruction"].split()) & {"red", "green", "blue", "yellow", "purple", "orange"}) == 1
    with pytest.raises(ConfigError):  # same folder, other variant: a new run needs a new folder
        run_eval(EvalSpec(**{**spec.__dict__, "variant": "plain"}), tmp_path / "run", progress=False)


def test_layers_json_last_line(tiny_checkpoint, capsys):
    code = main(["layers", "--model", str(tiny_checkpoint), "--tasks", "reach", "--episodes", "1",
                 "--max-steps", "3", "--distractors", "1", "--json"])
    assert code == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    result = json.loads(last)
    assert result["variant"] == "grounded"
    assert set(result["coverage"]) == set(result["candidates"]) and len(result["coverage"]) == 3  # 2 layers: 0, 1, 0,1
    chosen = result["chosen"]
    assert chosen["layers"] == result["best"] == result["candidates"][chosen["name"]]
    finite = [v for v in result["coverage"].values() if v is not None]
    assert chosen["coverage"] == max(finite)
    assert all(0.0 <= v <= 1.0 for v in finite)
    assert set(result["per_task"]) == {"reach"}


def test_variant_option_is_checked_and_recorded(tiny_checkpoint, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--model", str(tiny_checkpoint), "--out", str(tmp_path / "r"), "--variant", "nope"])
    assert main(["eval", "--model", str(tiny_checkpoint), "--tasks", "push", "--episodes", "1", "--max-steps", "2",
                 "--baseline-only", "--variant", "plain", "--out", str(tmp_path / "p")]) == 0
    assert json.loads((tmp_path / "p" / "config.json").read_text())["variant"] == "plain"


def test_lookalike_count_option_reaches_the_env(tiny_checkpoint, tmp_path):
    spec = EvalSpec(model=str(tiny_checkpoint), tasks=("push",), episodes=1, max_steps=1,
                    configs={"baseline": DTPConfig(enabled=False)}, lookalikes=0, distractors=0)
    assert spec.lookalikes == (0, 0) and EvalSpec.from_dict(spec.to_dict()) == spec
    env = benchmark_env("push", distractors=0, palette="ood", image_size=48, lookalikes=(2, 2))
    try:
        env.reset(seed=1_010_000)
        assert len(env.scene.lookalikes) == 2
    finally:
        env.close()
    with pytest.raises(ConfigError, match="lookalikes"):
        EvalSpec(lookalikes=(4, 2))
    assert main(["eval", "--model", str(tiny_checkpoint), "--tasks", "push", "--episodes", "1", "--max-steps", "1",
                 "--baseline-only", "--lookalikes", "0", "--distractors", "0", "--out", str(tmp_path / "z")]) == 0
    assert json.loads((tmp_path / "z" / "config.json").read_text())["lookalikes"] == [0, 0]
    with pytest.raises(SystemExit):
        main(["eval", "--out", str(tmp_path / "y"), "--lookalikes", "many"])
