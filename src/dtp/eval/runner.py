"""Evaluate a policy over tasks x seeds x configs, paired on seeds, appending results as it goes.

Every config runs on the same seeds, so baseline and DTP see identical scenes. Jobs are
(config, task, seed) triples in a fixed order; a job already in the run folder is skipped,
so rerunning a killed command resumes it. Runners (local, Ray) only differ in who runs
`run_jobs`; results are committed by the driver, one episode at a time.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ..choices import ROBOT_MASK_SOURCES, SWEEP_ABLATIONS  # the default set
from ..config import ABLATIONS, DTPConfig
from ..envs.variants import DEFAULT_VARIANT
from ..envs.benchmark import benchmark_env
from ..envs.tasks import TASK_NAMES
from ..errors import ConfigError
from ..numeric import nanmean
from ..regions import region_source, region_sources
from ..seeds import seed_set
from .store import RunStore, episode_key

log = logging.getLogger(__name__)

# Observation fields the benchmark env can hand a region source (dtp.regions obs_field): none,
# or its segmentation (region="oracle"). A user's mask (region="mask") has no source here.
ENV_FIELDS = (None, "segmentation")


@dataclass(frozen=True)
class Job:
    config: str
    task: str
    seed: int

    @property
    def key(self) -> str:
        return episode_key(self.config, self.task, self.seed)


@dataclass(frozen=True)
class EvalSpec:
    """What to evaluate. `configs` maps a name to a DTPConfig; "baseline" is usually DTP off."""

    model: str = "tinyvla"
    tasks: tuple[str, ...] = TASK_NAMES
    episodes: int = 10
    seed: int = 0
    configs: dict[str, DTPConfig] = field(default_factory=lambda: {"baseline": DTPConfig(enabled=False), "dtp": DTPConfig()})
    distractors: int = 3
    palette: str = "train"
    variant: str = DEFAULT_VARIANT  # benchmark variant (dtp.envs.variants); run folders before it existed hold "plain"
    lookalikes: tuple[int, int] | None = None  # lookalikes per scene (grounded); None: the split's range
    max_steps: int | None = None
    image_size: int = 96
    observe: bool = True  # capture during baseline passes too, for the attention analysis
    score_regions: bool = True
    episodes_by_config: dict[str, int] = field(default_factory=dict)  # overrides `episodes` per config
    threads: int = 1  # torch threads per runner process: 2 threads on 2 shared cores stall on any other load
    record_maps: bool = False  # keep each episode's frames and r, G, A, D per step in RUN/maps (dtp view)

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise ConfigError(f"episodes must be >= 1, got {self.episodes}")
        if not self.tasks:
            raise ConfigError("name at least one task")
        if not self.configs:
            raise ConfigError("name at least one config")
        unknown = set(self.episodes_by_config) - set(self.configs)
        if unknown:
            raise ConfigError(f"episodes_by_config names unknown configs {sorted(unknown)}")
        if any(n < 1 for n in self.episodes_by_config.values()):
            raise ConfigError("episodes_by_config values must be >= 1")
        if self.threads < 1:
            raise ConfigError(f"threads must be >= 1, got {self.threads}")
        for name, cfg in self.configs.items():
            field = region_source(cfg.region).obs_field
            if field not in ENV_FIELDS:
                raise ConfigError(
                    f"config {name!r}: region={cfg.region!r} needs obs[{field!r}] with every observation, which "
                    f"the benchmark does not supply; evaluate with one of {benchmark_region_sources()}"
                )
        from ..envs.variants import get_variant

        get_variant(self.variant)  # ConfigError naming the known variants
        if self.lookalikes is not None:
            from ..envs.distractors import DistractorConfig

            lo_hi = DistractorConfig(lookalikes=self.lookalikes).lookalikes  # ConfigError if out of range
            object.__setattr__(self, "lookalikes", lo_hi)

    def episodes_of(self, config: str) -> int:
        return self.episodes_by_config.get(config, self.episodes)

    def seeds(self) -> list[int]:
        """Every seed any config uses; a config with n episodes uses the first n (so pairs overlap)."""
        n = max(self.episodes_of(c) for c in self.configs)
        return seed_set(self.seed, n)

    def jobs(self, only: tuple[str, ...] | None = None) -> list[Job]:
        """Scene index, then task, then config: paired configs run back to back on one scene, and a
        run stopped part-way holds the same scenes of every task. `only` keeps those configs' jobs."""
        if only is not None:
            unknown = [c for c in only if c not in self.configs]
            if unknown:
                raise ConfigError(f"no config named {', '.join(map(repr, unknown))} in this run; "
                                  f"choose from {', '.join(self.configs)}")
        return [
            Job(c, t, s)
            for i, s in enumerate(self.seeds())
            for t in self.tasks
            for c in self.configs
            if i < self.episodes_of(c) and (only is None or c in only)
        ]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["tasks"] = list(self.tasks)
        d["configs"] = {k: v.to_dict() for k, v in self.configs.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EvalSpec":
        d = dict(d)
        d.setdefault("variant", "plain")  # written before variants existed: the plain benchmark
        if d.get("lookalikes") is not None:
            d["lookalikes"] = tuple(d["lookalikes"])
        d["tasks"] = tuple(d["tasks"])
        d["configs"] = {k: DTPConfig.from_dict(v) for k, v in d["configs"].items()}
        return cls(**d)


def benchmark_region_sources() -> tuple[str, ...]:
    """The region sources (dtp.regions) whose observation field the benchmark supplies."""
    return tuple(n for n in region_sources() if region_source(n).obs_field in ENV_FIELDS)


def sweep_ablation_names() -> tuple[str, ...]:
    """What a sweep's ablation may name: a DTPConfig ablation mode or a region source the benchmark can feed."""
    return tuple(a for a in ABLATIONS if a != "none") + benchmark_region_sources() + ROBOT_ABLATIONS


# sweep entries that run DTP with an embodiment-aware G (DTPConfig.keep_robot), at the default tau
ROBOT_ABLATIONS = tuple(f"robot_{s}" for s in ROBOT_MASK_SOURCES if s != "off")


def config_name(cfg: DTPConfig) -> str:
    """A sweep's name for a config: what runs, its region source unless attention, and tau.

    "baseline"; "dtp@tau=1" (attention region); "oracle@tau=1" (DTP over another region source);
    "random_outside@tau=1" or "random_outside/oracle@tau=1" (an ablation, with its region).
    """
    if not cfg.enabled:
        return "baseline"
    what = "dtp" if cfg.ablation == "none" else cfg.ablation
    if cfg.region != "attention":
        what = cfg.region if what == "dtp" else f"{what}/{cfg.region}"
    if cfg.keep_robot != "off":
        what = f"{what}+robot_{cfg.keep_robot}"  # "dtp+robot_motion@tau=1": an embodiment-aware G
    return f"{what}@tau={cfg.tau:g}"


def sweep_configs(
    taus: list[float],
    *,
    base: DTPConfig | None = None,
    default_tau: float | None = None,
    ablations: tuple[str, ...] = SWEEP_ABLATIONS,
) -> dict[str, DTPConfig]:
    """Baseline, DTP at each tau, and each ablation at the default tau (DTP's count for random pruning).

    An ablation is a DTPConfig ablation mode, or a region source (dtp.regions) that replaces
    the base's region: "similarity" relevance, the "oracle" ground-truth region. Names follow
    `config_name`, so a base region other than attention shows in every name.
    """
    valid = sweep_ablation_names()
    unknown = [a for a in ablations if a not in valid]
    if unknown:
        raise ConfigError(f"unknown ablation {', '.join(map(repr, unknown))}; choose from {', '.join(valid)}")
    base = base or DTPConfig()
    default_tau = base.tau if default_tau is None else default_tau
    configs = [base.replace(enabled=False)] + [base.replace(tau=float(tau)) for tau in taus]
    for ab in ablations:
        if ab in ROBOT_ABLATIONS:
            configs.append(base.replace(tau=default_tau, keep_robot=ab.removeprefix("robot_")))
        elif ab in benchmark_region_sources():
            fixed = region_source(ab).sweep_tau  # oracle_removal runs at tau 0: it removes every distractor patch
            configs.append(base.replace(tau=default_tau if fixed is None else fixed, region=ab))
        else:
            configs.append(base.replace(tau=default_tau, ablation=ab))
    out: dict[str, DTPConfig] = {}
    for cfg in configs:
        out.setdefault(config_name(cfg), cfg)  # e.g. region "oracle" on an oracle base is DTP at that tau
    return out


def _load_adapter(model: str):
    from ..models import load

    return load(model)


def _make_env(spec: EvalSpec, task: str, process: bool = False):
    """The run's env of `task`; with `process`, a proxy of it in a child process (dtp.envs.subprocess_env)."""
    kwargs = dict(distractors=spec.distractors, palette=spec.palette, image_size=spec.image_size,
                  max_steps=spec.max_steps, variant=spec.variant, lookalikes=spec.lookalikes)
    if process:
        from ..envs.subprocess_env import SubprocessEnv

        return SubprocessEnv(task=task, **kwargs)
    return benchmark_env(task, **kwargs)


def run_jobs(spec: EvalSpec, jobs: list[Job], adapter=None, batch: int = 1, env_processes: bool = False
             ) -> Iterator[tuple[dict, list[dict], dict | None]]:
    """Run jobs, yielding (episode row, step rows, maps) per finished episode; maps are the arrays of
    dtp.eval.maps with spec.record_maps, else None. batch > 1 steps that many episodes together
    (`_run_batched`): the same episodes, yielded as they finish; env_processes (batch > 1 only) steps
    each env in a child process, in parallel with the others and with the policy."""
    from ..policy import DTPPolicy
    from .episode import run_episode
    from .maps import MapRecorder

    import torch

    adapter = adapter if adapter is not None else _load_adapter(spec.model)
    envs = _EnvPool(spec, processes=env_processes and batch > 1)
    saved_threads = torch.get_num_threads()
    torch.set_num_threads(spec.threads)  # same numerics in every runner; restored below
    try:
        if batch > 1:
            yield from _run_batched(spec, jobs, adapter, envs, batch)
            return
        for job in jobs:
            env = envs.take(job.task)
            policy = DTPPolicy(adapter, spec.configs[job.config], observe=spec.observe)
            recorder = MapRecorder() if spec.record_maps else None
            t0 = time.perf_counter()
            out = run_episode(policy, env, job.seed, score_regions=spec.score_regions, recorder=recorder)
            envs.give_back(job.task, env)
            yield episode_rows(spec, job, env, out, time.perf_counter() - t0, recorder)
    finally:
        torch.set_num_threads(saved_threads)
        envs.close()


def _run_batched(spec: EvalSpec, jobs: list[Job], adapter, envs: "_EnvPool", batch: int
                 ) -> Iterator[tuple[dict, list[dict], dict | None]]:
    """Up to `batch` episodes at once: at each step, one `step_batch` per group of live episodes (a config's,
    each episode with its own state), whose envs then start their steps; a group waits for its envs'
    last steps just before its next policy call, so subprocess envs step while the other groups' policy
    runs. A finished episode's slot takes the next job."""
    from ..policy import DTPPolicy
    from .episode import EpisodeRun
    from .maps import MapRecorder

    if getattr(adapter, "reset", None) is not None:  # pi0 reseeds one noise generator per episode
        raise ConfigError(f"{type(adapter).__name__} keeps per-episode state in the adapter (reset); run with --batch 1")
    policies = {name: DTPPolicy(adapter, cfg, observe=spec.observe) for name, cfg in spec.configs.items()}
    queue = list(reversed(jobs))  # pop() from the end keeps the run order
    live: list[tuple[Job, EpisodeRun, float]] = []
    while queue or live:
        while queue and len(live) < batch:
            job = queue.pop()
            recorder = MapRecorder() if spec.record_maps else None
            run = EpisodeRun(policies[job.config], envs.take(job.task), job.seed, score_regions=spec.score_regions,
                             recorder=recorder)
            live.append((job, run, time.perf_counter()))
        for name, group in _step_groups(live, split=envs.processes):
            for run in group:
                if run.pending is not None:
                    run.receive()
            group = [run for run in group if not run.done]
            if not group:
                continue
            obs = [run.observation() for run in group]
            t0 = time.perf_counter()
            results = policies[name].step_batch(obs, [run.episode for run in group])
            share = (time.perf_counter() - t0) / len(group)
            for run, o, res in zip(group, obs, results):
                run.seconds["policy_s"] += share
                run.send(res, o)
        for job, run, start in [entry for entry in live if entry[1].done]:
            envs.give_back(job.task, run.env)
            yield episode_rows(spec, job, run.env, run.outcome(), time.perf_counter() - start, run.recorder)
        live = [entry for entry in live if not entry[1].done]


def _step_groups(live: list, split: bool) -> list[tuple[str, list]]:
    """The live episodes by config, in config order of first appearance; with `split` (subprocess envs)
    a lone config's episodes form two halves, so that one half's envs step while the other's policy runs."""
    groups: dict[str, list] = {}
    for job, run, _ in live:
        groups.setdefault(job.config, []).append(run)
    out = list(groups.items())
    if split and len(out) == 1 and len(out[0][1]) > 1:
        name, runs = out[0]
        half = (len(runs) + 1) // 2
        out = [(name, runs[:half]), (name, runs[half:])]
    return out


class _EnvPool:
    """Envs by task, reused: an episode takes a free one (or a new one) and gives it back when it ends."""

    def __init__(self, spec: EvalSpec, processes: bool = False) -> None:
        self.spec, self.processes = spec, processes  # processes: each env in its own child process
        self.free: dict[str, list[Any]] = {}
        self.all: list[Any] = []

    def take(self, task: str):
        free = self.free.setdefault(task, [])
        if free:
            return free.pop()
        env = _make_env(self.spec, task, self.processes)
        self.all.append(env)
        return env

    def give_back(self, task: str, env) -> None:
        self.free[task].append(env)

    def close(self) -> None:
        for env in self.all:
            env.close()


def episode_rows(spec: EvalSpec, job: Job, env, out, wall: float, recorder) -> tuple[dict, list[dict], dict | None]:
    """The episode row, its step rows and its maps, as the run folder stores them."""
    cfg = spec.configs[job.config]
    steps = out.steps
    fired = [s["fired"] for s in steps]
    row = {
        "key": job.key,
        "config": job.config,
        "task": job.task,
        "seed": job.seed,
        "success": out.success,
        "length": out.length,
        "tau": cfg.tau if cfg.enabled and math.isfinite(cfg.tau) else None,
        "dtp_enabled": cfg.enabled,
        "ablation": cfg.ablation,
        "region": cfg.region,
        "instruction": getattr(env.unwrapped, "instruction", ""),
        "wall_s": wall,
        **out.seconds,
        "fired_share": sum(fired) / len(fired) if fired else 0.0,
        "mean_pruned": sum(s["n_pruned"] for s in steps) / len(steps) if steps else 0.0,
        "mean_irrelevant_fraction": nanmean([s["irrelevant_fraction"] for s in steps]),
        "mean_irrelevant_attention": nanmean([s["irrelevant_attention"] for s in steps]),
    }
    step_rows = [{**s, "config": job.config, "task": job.task, "seed": job.seed,
                  "t_norm": s["step"] / max(1, out.length - 1), "tau": row["tau"]} for s in steps]
    return row, step_rows, (recorder.arrays() if recorder is not None else None)


def run_eval(
    spec: EvalSpec,
    out_dir: str | Path,
    *,
    runner: str = "local",
    address: str | None = None,
    workers: int = 2,
    progress: bool = True,
    adapter=None,
    only: tuple[str, ...] | None = None,
    batch: int = 1,
    env_processes: bool = False,
) -> RunStore:
    """Run every job not yet in `out_dir`, appending each episode as it finishes; `only` runs just
    those configs now (the rest of the run stays to do, e.g. the headline configs first). batch > 1:
    each runner steps that many episodes together (one batched policy call per config and step);
    env_processes then steps each of those envs in its own process (the same episodes, faster on 2+ cores).

    Everything is checked first (runner, folder, model, tasks, DTP settings; see
    dtp.eval.preflight), so a bad setting writes nothing; config.json records the resolved spec.
    """
    from .preflight import check_runner, check_writable_dir, prepare_run

    check_runner(runner)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ConfigError(f"batch must be a positive integer, got {batch!r}")
    check_writable_dir(out_dir, "run folder")
    spec.jobs(only)  # ConfigError for a name not in the run, before anything loads or is written
    spec, adapter = prepare_run(spec, adapter)
    # config.json of older runs spells the region `relevance`: the same options still resume them
    store = RunStore(out_dir).open(spec.to_dict(), upgrade=lambda d: EvalSpec.from_dict(d).to_dict())
    done = store.done_keys()
    jobs = spec.jobs(only)
    todo = [j for j in jobs if j.key not in done]
    log.info("%d of %d episodes to run in %s", len(todo), len(jobs), out_dir)
    from tqdm.auto import tqdm

    bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc="episodes", disable=not progress)
    try:  # the bar is closed before any error or Ctrl-C reaches the terminal
        if runner == "ray":
            from .ray_runner import run_jobs_ray

            results = run_jobs_ray(spec, todo, address=address, workers=workers, batch=batch,
                                   env_processes=env_processes)
        else:
            results = run_jobs(spec, todo, adapter=adapter, batch=batch, env_processes=env_processes)
        for row, steps, maps in results:
            store.append(row, steps, maps=maps)
            bar.update(1)
            bar.set_postfix_str(f"{row['task']} {row['config']} {'ok' if row['success'] else 'fail'}")
    finally:
        bar.close()
    return store
