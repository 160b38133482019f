"""The Ray runner gives exactly the local runner's results, and survives a killed worker."""

import os
import signal

import pytest

from dtp.config import DTPConfig
from dtp.eval import EvalSpec, run_jobs
from dtp.eval.ray_runner import run_jobs_ray

ray = pytest.importorskip("ray")


def _essence(rows):
    return {r["key"]: (r["success"], r["length"], tuple(tuple(s["action"]) for s in steps)) for r, steps, _ in rows}


def _worker_pids() -> list[int]:
    """Ray titles actor processes 'ray::EpisodeWorker...'."""
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                cmd = open(f"/proc/{d}/cmdline", "rb").read().decode(errors="replace")
            except OSError:
                continue
            if cmd.startswith("ray::EpisodeWorker"):
                pids.append(int(d))
    assert pids, "no Ray worker process found"
    return pids


def test_ray_equals_local_and_survives_a_killed_worker(tiny_checkpoint):
    spec = EvalSpec(model=str(tiny_checkpoint), tasks=("push", "reach"), episodes=2, max_steps=4,
                    configs={"baseline": DTPConfig(enabled=False), "dtp": DTPConfig(tau=0.2)})
    jobs = spec.jobs()
    local = _essence(run_jobs(spec, jobs))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        got, killed = [], False
        for item in run_jobs_ray(spec, jobs, workers=2):
            got.append(item)
            if not killed:
                os.kill(_worker_pids()[0], signal.SIGKILL)
                killed = True
    finally:
        ray.shutdown()
    keys = [r["key"] for r, _, _ in got]
    assert killed and sorted(keys) == sorted(j.key for j in jobs)  # nothing lost, nothing twice
    assert _essence(got) == local
