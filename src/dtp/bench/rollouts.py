"""Rollout throughput with DTP off and on: env steps per second and where the time of a step goes."""

from __future__ import annotations

import statistics
import time
from typing import Any

from ..config import DTPConfig
from ..policy import DTPPolicy

__all__ = ["throughput", "batched_throughput"]


def _rollout_loop(policy: DTPPolicy, env, seed: int) -> tuple[float, float, int, int]:
    """The evaluation loop when dtp.eval is not there: (model seconds, env seconds, steps, steps pruned)."""
    obs, _ = env.reset(seed=seed)
    policy.reset(seed)
    model_s = env_s = 0.0
    steps = fired = 0
    while True:
        t0 = time.perf_counter()
        res = policy.step(obs)
        model_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        obs, _, terminated, truncated, _ = env.step(res.action)
        env_s += time.perf_counter() - t0
        steps += 1
        fired += res.record.fired
        if terminated or truncated:
            return model_s, env_s, steps, fired


def _render_seconds(env, n: int = 20) -> float:
    """Median seconds of one env.render() (the same renderer env.step uses for its observation)."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        env.render()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def throughput(adapter, cfg: DTPConfig, episodes: int, seed: int) -> dict[str, Any]:
    """Rollouts of "push" with DTP off and on: env steps/s, episodes/min, time per step split into
    model (policy.step), render and physics (env.step = physics + rendering the next frame; rendering
    is timed on its own on each episode's final state and subtracted), other (env build, reset)."""
    from ..envs import make_env

    try:
        from ..eval.episode import run_episode
    except ImportError:  # dtp.eval not there yet: the same loop, here
        run_episode = None
    size = adapter.model.config.image_size
    out: dict[str, Any] = {"rollout": "dtp.eval.episode.run_episode" if run_episode else "dtp.bench loop", "task": "push"}
    for label, dtp_cfg in (("off", DTPConfig(enabled=False)), ("on", cfg)):
        policy = DTPPolicy(adapter, dtp_cfg)
        model_s = env_s = render_s = probe_s = 0.0
        steps = fired = 0
        t_all = time.perf_counter()
        for ep in range(episodes):
            env = make_env("push", image_size=size, variant="plain")  # as docs/performance.md measured
            try:
                if run_episode is not None:
                    res = run_episode(policy, env, seed + ep)
                    m, e, n = res.seconds["policy_s"], res.seconds["env_s"], res.length
                    f = sum(bool(row.get("fired")) for row in res.steps)
                else:
                    m, e, n, f = _rollout_loop(policy, env, seed + ep)
                t0 = time.perf_counter()
                per_frame = _render_seconds(env)
                probe_s += time.perf_counter() - t0
            finally:
                env.close()
            model_s, env_s, render_s = model_s + m, env_s + e, render_s + per_frame * n
            steps, fired = steps + n, fired + f
        wall = time.perf_counter() - t_all - probe_s
        out[label] = {
            "episodes": episodes,
            "steps": steps,
            "steps_pruned": fired,
            "steps_per_s": steps / wall,
            "episodes_per_min": 60 * episodes / wall,
            "model_s_per_step": model_s / steps,
            "render_s_per_step": render_s / steps,
            "physics_s_per_step": max(0.0, (env_s - render_s) / steps),
            "other_s_per_step": max(0.0, (wall - model_s - env_s) / steps),
        }
    return out


def batched_throughput(adapter, cfg: DTPConfig, episodes: int, seed: int, batch: int,
                       max_steps: int | None = None) -> dict[str, Any]:
    """The same `episodes` rollouts of "push" with DTP on, through dtp.eval's runner at --batch 1 and at
    --batch `batch`, in one run: episodes/min of each, their ratio, and where the time went (policy, env
    step, the segmentation render that scores the regions, other), summed over the episodes. max_steps: the
    episodes' step limit (None: the task's own)."""
    from ..eval.runner import EvalSpec, run_jobs

    spec = EvalSpec(model="bench", tasks=("push",), episodes=episodes, seed=seed, configs={"dtp": cfg},
                    variant="plain", image_size=adapter.model.config.image_size, max_steps=max_steps)
    out: dict[str, Any] = {"task": "push", "config": "dtp", "episodes": episodes, "rollout": "dtp.eval.runner.run_jobs"}
    for b in (1, batch):
        t0 = time.perf_counter()
        rows = [row for row, _, _ in run_jobs(spec, spec.jobs(), adapter=adapter, batch=b)]
        wall = time.perf_counter() - t0
        parts = {k: sum(r[k] for r in rows) for k in ("policy_s", "env_s", "segmentation_s")}
        out[f"batch_{b}"] = {
            "batch": b,
            "wall_s": wall,
            "steps": sum(r["length"] for r in rows),
            "episodes_per_min": 60 * len(rows) / wall,
            **parts,
            "other_s": max(0.0, wall - sum(parts.values())),
            "successes": sum(bool(r["success"]) for r in rows),
        }
    out["ratio"] = out[f"batch_{batch}"]["episodes_per_min"] / out["batch_1"]["episodes_per_min"]
    out["batch"] = batch
    return out
