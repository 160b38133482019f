"""vla-eval's orchestrator runs our Meta-World benchmark against `dtp serve --protocol vla-eval`.

The actions vla-eval recorded per step (its SQLite step rows) must equal an in-process
DTPPolicy's `run_episode` on the same scenes, token for token; errors from bad observations
come back as vla-eval ERROR messages and the server keeps serving.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("vla_eval")

import anyio  # noqa: E402
from vla_eval.api import run  # noqa: E402
from vla_eval.connection import Connection  # noqa: E402

from dtp import DTPConfig, DTPPolicy  # noqa: E402
from dtp.errors import ConfigError  # noqa: E402
from dtp.eval.episode import run_episode  # noqa: E402
from dtp.envs.benchmark import benchmark_env  # noqa: E402
from dtp.models import load  # noqa: E402
from dtp.serve.benchmark import MetaWorldDistractors, scene_seed  # noqa: E402

BENCHMARK = "dtp.serve.benchmark:MetaWorldDistractors"
MAX_STEPS = 4
EPISODES = 2


def test_vla_eval_runs_our_benchmark_against_dtp_serve(tmp_path, start_server, recorded_steps):
    torch.set_num_threads(1)
    config = {
        "render": "cpu",
        "benchmarks": [{
            "benchmark": BENCHMARK, "episodes_per_task": EPISODES, "max_steps": MAX_STEPS,
            "params": {"tasks": ["push"], "variant": "plain", "max_steps": MAX_STEPS, "seed": 0, "diagnostics": True},
        }],
    }
    with start_server(tmp_path, "--protocol", "vla-eval") as server:
        results = run(config, server_url=server.url, output_dir=tmp_path / "out", docker=False)
        assert server.stop() == 0
    assert "Traceback" not in server.stderr()
    (bench,) = results
    assert bench["num_episodes_total"] == EPISODES and bench["num_errors"] == 0
    assert bench["server_info"]["model_server"] == "DTPModelServer"
    steps = recorded_steps(tmp_path / "out", bench)
    assert sorted(steps) == list(range(EPISODES))

    policy = DTPPolicy(load("tinyvla"), DTPConfig())
    env = benchmark_env("push", distractors=3, palette="train", variant="plain", image_size=96, max_steps=MAX_STEPS)
    try:
        fired = []
        for i in range(EPISODES):
            tokens: list[list[int]] = []
            local = run_episode(policy, env, scene_seed(0, i), on_step=lambda k, obs, rec: tokens.append(rec.tokens))
            remote = steps[i]
            assert len(remote) == local.length == MAX_STEPS
            for k, (row, ref) in enumerate(zip(remote, local.steps)):
                np.testing.assert_array_equal(np.float32(row["action"]), np.float32(ref["action"]))
                assert row["tokens"] == tokens[k]
                assert row["fired"] == ref["fired"] and row["n_pruned"] == ref["n_pruned"]
                fired.append(row["fired"])
        assert any(fired), "DTP never pruned: pass 2 went untested"
    finally:
        env.close()


def test_vla_eval_error_replies_and_separate_sessions(tmp_path, start_server):
    """Bad observations get ERROR replies on one connection while another keeps its own episode."""
    env = benchmark_env("push", distractors=3, palette="train", variant="plain", image_size=96)
    try:
        obs, _ = env.reset(seed=scene_seed(0, 0))
    finally:
        env.close()
    good = {"images": {"dtp_main": obs["image"]}, "task_description": obs["instruction"], "state": obs["proprio"],
            "dtp_diagnostics": True}
    bad = {
        "wrong image shape": {**good, "images": {"dtp_main": np.zeros((40, 40, 3), np.uint8)}},
        "empty prompt": {**good, "task_description": ""},
        "no images": {"task_description": "push the puck"},
        "prompt not a string": {**good, "task_description": 3},
    }

    async def session() -> None:
        a = Connection(server.url, timeout=120)
        b = Connection(server.url, timeout=120)
        await a.connect()
        await b.connect()
        try:
            with pytest.raises(RuntimeError, match="episode_start"):
                await a.act(good)  # no episode yet
            await a.start_episode({"task": {"name": "push", "seed": 7}})
            await b.start_episode({"task": {"name": "push", "seed": 7}})
            first = await a.act(good)
            for name, message in bad.items():
                with pytest.raises(RuntimeError, match="observation_failed"):
                    await a.act(message)
            second = await a.act(good)
            other = await b.act(good)
            assert (first["dtp"]["step"], second["dtp"]["step"], other["dtp"]["step"]) == (0, 1, 0)
            np.testing.assert_array_equal(first["actions"], other["actions"])
            await a.end_episode({})
            await a.start_episode({"task": {"name": "push", "seed": 7}})
            assert (await a.act(good))["dtp"]["step"] == 0  # a new episode, a fresh policy
        finally:
            await a.close()
            await b.close()

    with start_server(tmp_path, "--protocol", "vla-eval") as server:
        anyio.run(session)
        assert server.stop() == 0
    err = server.stderr()
    assert "this model takes 96x96 images, got 40x40" in err and "instruction is empty" in err


def test_benchmark_checks_its_params():
    with pytest.raises(ConfigError, match="tasks"):
        MetaWorldDistractors(tasks=["fly"])
    b = MetaWorldDistractors(tasks="push,reach", max_steps=3)
    assert [t["name"] for t in b.get_tasks()] == ["push", "reach"]
    assert b.get_metadata()["max_steps"] == 3
