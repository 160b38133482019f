"""Spread a run's episodes over Ray workers (a local Ray by default, or a cluster via `address`).

Work goes out in chunks of one scene (task, seed) x every config, so paired configs share
a worker's env. Each worker loads the model once. A worker that dies is restarted by Ray
and its chunk re-run from scratch: the driver only commits whole returned chunks (and the
store drops keys it already has), so nothing is lost or counted twice. Workers use the
driver's torch thread count, so for the same seeds they compute what the local runner does.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from typing import Iterator

from .runner import EvalSpec, Job, run_jobs

log = logging.getLogger(__name__)


class EpisodeWorker:
    """Ray actor body: holds a loaded adapter and runs chunks of jobs."""

    def __init__(self, spec: dict):
        self.spec = EvalSpec.from_dict(spec)
        self.adapter = None

    def pid(self) -> int:
        return os.getpid()

    def run(self, jobs: list[tuple[str, str, int]], batch: int = 1, env_processes: bool = False
            ) -> list[tuple[dict, list[dict], dict | None]]:
        from .runner import _load_adapter

        if self.adapter is None:
            self.adapter = _load_adapter(self.spec.model)
        return list(run_jobs(self.spec, [Job(*j) for j in jobs], adapter=self.adapter, batch=batch,
                             env_processes=env_processes))


def chunk_by_scene(jobs: list[Job], scenes: int = 1) -> list[list[Job]]:
    """Chunks of `scenes` scenes (task, seed) x every config, in run order (a batched worker steps a
    chunk's episodes together)."""
    chunks: OrderedDict[tuple[str, int], list[Job]] = OrderedDict()
    for j in jobs:
        chunks.setdefault((j.task, j.seed), []).append(j)
    per_scene = list(chunks.values())
    return [[j for chunk in per_scene[i:i + scenes] for j in chunk] for i in range(0, len(per_scene), scenes)]


def run_jobs_ray(
    spec: EvalSpec, jobs: list[Job], *, address: str | None = None, workers: int = 2, max_chunk_retries: int = 3,
    batch: int = 1,
    env_processes: bool = False,
) -> Iterator[tuple[dict, list[dict], dict | None]]:
    import ray

    started_here = False
    if not ray.is_initialized():
        kwargs = {"address": address} if address else {"num_cpus": workers, "include_dashboard": False}
        ray.init(log_to_driver=False, **kwargs)
        started_here = True
    try:
        actor_cls = ray.remote(num_cpus=1, max_restarts=-1, max_task_retries=-1)(EpisodeWorker)
        pool = [actor_cls.remote(spec.to_dict()) for _ in range(max(1, workers))]
        configs = max(1, len(spec.configs))
        pending = chunk_by_scene(jobs, scenes=max(1, batch // configs))  # about `batch` episodes a chunk
        pending.reverse()  # pop() from the end keeps the run order
        in_flight: dict = {}
        tries: dict[int, int] = {}

        def submit(actor) -> None:
            if pending:
                chunk = pending.pop()
                ref = actor.run.remote([(j.config, j.task, j.seed) for j in chunk], batch, env_processes)
                in_flight[ref] = (actor, chunk)

        for actor in pool:
            submit(actor)
        while in_flight:
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            ref = ready[0]
            actor, chunk = in_flight.pop(ref)
            try:
                results = ray.get(ref)
            except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as e:
                key = id(chunk)
                tries[key] = tries.get(key, 0) + 1
                if tries[key] > max_chunk_retries:
                    raise
                log.warning("worker died on %s (%s); retrying the chunk", chunk[0].key, type(e).__name__)
                pending.append(chunk)
                submit(actor)
                continue
            submit(actor)
            yield from results
    finally:
        if started_here:
            ray.shutdown()
