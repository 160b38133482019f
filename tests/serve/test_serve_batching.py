"""Batched serving (issue 26 part 3): one EpisodeState per session, step_sessions equals each session's own
step, sessions are freed, the flags are checked, and a small loopback load test (`dtp.serve.loadtest`)."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest

from dtp import DTPConfig, DTPPolicy
from dtp.cli import main
from dtp.errors import ConfigError
from dtp.models.base import Observation
from dtp.serve import ServedPolicy, serve

INSTRUCTIONS = ("push the red puck to the goal", "open drawer", "press the button", "reach target")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def frames(client: int, n: int) -> list[Observation]:
    rng = np.random.default_rng(100 + client)
    return [Observation(image=rng.integers(0, 256, (48, 48, 3), dtype=np.uint8),
                        instruction=INSTRUCTIONS[client % len(INSTRUCTIONS)],
                        proprio=rng.normal(size=4).astype(np.float32)) for _ in range(n)]


@pytest.mark.parametrize("cfg", [DTPConfig(tau=0.2), DTPConfig(tau=0.2, ablation="random_outside", seed=5)])
def test_step_sessions_equals_each_sessions_own_step(tiny_adapter, cfg):
    """Three sessions (seeds 0, 1, 2) stepped together, one resetting mid-way: each equals its own
    sequential DTPPolicy; the random ablation draws from each session's (seed, step), so a mix-up shows."""
    served = ServedPolicy(tiny_adapter, cfg)
    sessions = [served.open_session(seed) for seed in range(3)]
    obs = [frames(c, 4) for c in range(3)]
    got: list[list] = [[] for _ in sessions]
    for k in range(4):
        if k == 2:
            sessions[1].reset(7)  # a new episode on client 1 only
        replies = served.step_sessions(sessions, [o[k] for o in obs], [True] * 3)
        for c, (action, diag) in enumerate(replies):
            got[c].append((action, diag))
    fired = 0
    for c in range(3):
        pol = DTPPolicy(tiny_adapter, cfg)
        pol.reset(c)
        for k in range(4):
            if c == 1 and k == 2:
                pol.reset(7)
            want = pol.step(obs[c][k])
            action, diag = got[c][k]
            np.testing.assert_array_equal(action, np.float32(want.action))
            assert diag["tokens"] == want.record.tokens and diag["step"] == want.record.step
            assert diag["n_pruned"] == want.record.n_pruned
            fired += diag["fired"]
    assert fired > 0  # DTP's pass 2 ran for some samples


def test_session_step_equals_a_fresh_policy_and_sessions_are_freed(tiny_adapter):
    served = ServedPolicy(tiny_adapter, DTPConfig(tau=0.2))
    sessions = [served.open_session(s) for s in range(4)]
    assert len(served.sessions) == 4
    obs = frames(0, 2)
    pol = DTPPolicy(tiny_adapter, DTPConfig(tau=0.2))
    pol.reset(2)
    for o in obs:
        np.testing.assert_array_equal(sessions[2].step(o)[0], np.float32(pol.step(o).action))
    assert sessions[0].step(obs[0])[0].shape == (4,)  # still at step 0 in its own episode
    episodes = [weakref.ref(s.episode) for s in sessions]
    old = weakref.ref(sessions[3].episode)
    sessions[3].reset(9)
    for s in sessions:
        s.close()
    sessions.clear()
    gc.collect()
    assert len(served.sessions) == 0
    assert all(ref() is None for ref in episodes) and old() is None  # no EpisodeState outlives its session


def test_batching_flags_are_checked(capsys, tiny_adapter):
    for flags in (["--max-batch", "0"], ["--batch-window-ms", "-1"], ["--max-batch", "two"]):
        with pytest.raises(SystemExit) as e:
            main(["serve", "--protocol", "openpi", *flags])
        assert e.value.code == 2
        assert "--max-batch" in capsys.readouterr().err or "--batch-window-ms" in flags
    served = ServedPolicy(tiny_adapter, DTPConfig())
    with pytest.raises(ConfigError, match="--max-batch"):
        serve(served, protocol="openpi", max_batch=0)
    with pytest.raises(ConfigError, match="--batch-window-ms"):
        serve(served, protocol="openpi", max_batch=2, batch_window_ms=float("nan"))
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    assert "--max-batch N" in out and "--batch-window-ms MS" in out


@pytest.mark.slow
def test_load_on_loopback_small(tiny_checkpoint):
    """8 clients x 12 requests against `dtp serve` unbatched and --max-batch 8 (the full 16 x 200 is
    `python -m dtp.serve.loadtest`, figures in docs/performance.md): no lost or mixed-up replies,
    batches formed, every session freed after its client left, and RSS flat between N and 2N sessions."""
    from dtp.serve.loadtest import format_report, measure

    r = measure(str(tiny_checkpoint), clients=8, requests=12, max_batch=8, window_ms=5.0, threads=1, sessions=8,
                rounds=3)
    print(format_report(r))
    unbatched, batched = r["modes"]
    for m in (unbatched, batched):
        assert m["requests"] == 8 * 12 and m["lost"] == 0 and m["mismatched"] == 0
        mem = m["memory"]
        assert mem["open_after_load"] == mem["open_after_n"] == mem["open_after_2n"] == 0
        assert mem["after_2n_mb"] - mem["after_n_mb"] < 32  # 8 more sessions: allocator noise, not state
        assert m["server_step_ms_per_request"] > 0
    assert unbatched["max_batch_seen"] == 1 and batched["max_batch_seen"] > 1


def test_vla_eval_episodes_at_once_are_batched_and_equal_in_process(tmp_path, start_server, tiny_checkpoint):
    """Three concurrent vla-eval episodes against --max-batch 4: each episode's actions equal its own
    in-process episode (seeded by its task), batches of more than one formed, and a bad observation
    in one episode fails only that observation."""
    pytest.importorskip("vla_eval")
    import anyio
    from vla_eval.connection import Connection

    from dtp.models import load

    steps = 4
    obs = {c: [{"images": {"cam": np.asarray(o.image.repeat(2, 0).repeat(2, 1))}, "task_description": o.instruction,
                "state": o.proprio} for o in frames(c, steps)] for c in range(3)}
    got: dict[int, list] = {}

    async def episode(url: str, c: int) -> None:
        conn = Connection(url, timeout=300)
        await conn.connect()
        try:
            await conn.start_episode({"task": {"name": "push", "seed": 10 + c}})
            got[c] = []
            for k, o in enumerate(obs[c]):
                if c == 2 and k == 1:
                    with pytest.raises(Exception, match="image"):
                        await conn.act({**o, "images": {"cam": np.zeros((5, 5, 3), np.uint8)}})
                got[c].append(await conn.act(o))
            await conn.end_episode({})
        finally:
            await conn.close()

    async def run_all(url: str) -> None:
        async with anyio.create_task_group() as tg:
            for c in obs:
                tg.start_soon(episode, url, c)

    with start_server(tmp_path, "--protocol", "vla-eval", "--model", str(tiny_checkpoint), "--max-batch", "4",
                      "--batch-window-ms", "100") as server:
        anyio.run(run_all, server.url)
        assert server.stop() == 0
    err = server.stderr()  # vla-eval logs each failed observation with its traceback: exactly the bad one
    assert err.count("Error in on_observation") == 1 and "got 5x5" in err
    pol = DTPPolicy(load(str(tiny_checkpoint)), DTPConfig())
    for c in obs:
        pol.reset(10 + c)
        for o, reply in zip(obs[c], got[c]):
            want = pol.step({"image": o["images"]["cam"], "instruction": o["task_description"], "proprio": o["state"]})
            np.testing.assert_array_equal(np.float32(reply["actions"]), np.float32(want.action))
    sizes = [r["server_timing"]["batch_size"] for c in got for r in got[c]]
    assert max(sizes) > 1
