"""Scripted demonstrations: record the Meta-World expert to one HDF5 file per episode.

Layout of `out_dir/<task>/ep_<seed:06d>.h5`:
    images   uint8   (T, H, W, 3)  camera frame before each action
    proprio  float32 (T, 4)        hand xyz and gripper opening before each action
    actions  float32 (T, 4)        expert action, clipped to [-1, 1]
    attrs: task, instruction, seed, success, n_steps, success_step, distractor_count,
           palette, image_size, camera, max_steps, distractors (JSON), format_version,
           variant, scene (JSON of `MetaWorldEnv.scene` at the reset: colours, lookalikes)
Files are written under a temporary name and renamed, so an interrupted run loses at
most the episodes in flight and a rerun resumes. Failed seeds go to
`out_dir/failed.jsonl` and further seeds are tried until each task has its count.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import logging
import multiprocessing
import os
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import h5py
import numpy as np
from tqdm.auto import tqdm

from dtp.envs.tasks import task_index
from dtp.errors import ConfigError
from dtp.envs.variants import DEFAULT_VARIANT

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
DEMO_SEED_LIMIT = 1_000_000  # demo seeds stay below; dtp.eval's evaluation seeds start here
MAX_INDEX = 10_000  # episodes (incl. failures) per task and base seed
MAX_BASE_SEED = 10
FAILED_LOG = "failed.jsonl"
COLLECTION = "collection.json"  # the settings every episode of the folder shares


@dataclass(frozen=True)
class RecordSettings:
    """What every episode of a collection shares."""

    image_size: int
    distractor_count_range: tuple[int, int]
    palette: Any  # split name or colour name -> RGB mapping
    camera: str
    max_steps: int
    post_success_steps: int
    variant: str = "plain"


@dataclass(frozen=True)
class EpisodeResult:
    task: str
    seed: int
    success: bool
    n_steps: int
    seconds: float


def demo_seed(seed: int, task: str, index: int) -> int:
    """Reset seed of the `index`-th demo episode of `task` for base `seed` (deterministic).

    100000 * seed + 10000 * (position of the task in TASKS) + index: distinct per task,
    always below 1e6, where dtp.eval's evaluation seeds begin, so no evaluation scene
    replays a demonstration.
    """
    if not 0 <= seed < MAX_BASE_SEED:
        raise ConfigError(f"demo base seed must be in [0, {MAX_BASE_SEED}), got {seed}")
    if not 0 <= index < MAX_INDEX:
        raise ConfigError(f"episode index must be in [0, {MAX_INDEX}), got {index}")
    seed_ = 100_000 * int(seed) + MAX_INDEX * task_index(task) + int(index)
    assert seed_ < DEMO_SEED_LIMIT, "more than 10 tasks need a wider seed layout"
    return seed_


def episode_path(out_dir: str | Path, task: str, seed: int) -> Path:
    return Path(out_dir) / task / f"ep_{seed:06d}.h5"


def distractor_count_for(seed: int, count_range: tuple[int, int]) -> int:
    """Number of distractors shown in the episode with reset `seed` (inclusive range)."""
    lo, hi = count_range
    return int(np.random.default_rng([int(seed), 0xC0]).integers(lo, hi + 1))


def record_episode(env: Any, task: str, seed: int, settings: RecordSettings, path: Path) -> EpisodeResult:
    """Run the expert on `env` from reset `seed`; write `path` only if it succeeds."""
    start = time.perf_counter()
    count = distractor_count_for(seed, settings.distractor_count_range)
    obs, _ = env.reset(seed=seed, options={"distractor_count": count})
    scene = env.unwrapped.scene.to_dict()
    images, proprio, actions = [], [], []
    success_step = None
    while True:
        action = env.expert_action()
        images.append(obs["image"])
        proprio.append(obs["proprio"])
        actions.append(action)
        obs, _, _, truncated, info = env.step(action)
        if info["success"] and success_step is None:
            success_step = len(actions)
        if success_step is not None and len(actions) >= success_step + settings.post_success_steps:
            break
        if truncated:
            break
    success = success_step is not None
    if success:
        _write_episode(
            path,
            images=np.stack(images),
            proprio=np.stack(proprio).astype(np.float32),
            actions=np.clip(np.stack(actions), -1.0, 1.0).astype(np.float32),
            attrs={
                "task": task,
                "instruction": obs["instruction"],
                "seed": int(seed),
                "success": True,
                "n_steps": len(actions),
                "success_step": int(success_step),
                "distractor_count": count,
                "palette": settings.palette if isinstance(settings.palette, str) else json.dumps(settings.palette),
                "image_size": settings.image_size,
                "camera": settings.camera,
                "max_steps": settings.max_steps,
                "distractors": json.dumps([asdict(d) for d in env.unwrapped.distractors]),
                "format_version": FORMAT_VERSION,
                "variant": settings.variant,
                "scene": json.dumps(scene),
            },
        )
    return EpisodeResult(task, int(seed), success, len(actions), time.perf_counter() - start)


def _write_episode(path: Path, *, images, proprio, actions, attrs: dict[str, Any]) -> None:
    """Write one episode under a temporary name, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with h5py.File(tmp, "w") as f:
        f.create_dataset("images", data=images, chunks=(1, *images.shape[1:]), compression="lzf")
        f.create_dataset("proprio", data=proprio)
        f.create_dataset("actions", data=actions)
        f.attrs.update(attrs)
    os.replace(tmp, path)


def _record_batch(out_dir: str, task: str, seeds: list[int], settings: RecordSettings) -> list[EpisodeResult]:
    """Worker job: one env for `task`, several episodes, env closed at the end."""
    from dtp.envs.distractors import DistractorConfig
    from dtp.envs.metaworld_env import make_env

    env = make_env(
        task,
        image_size=settings.image_size,
        distractors=DistractorConfig(count=settings.distractor_count_range[1], palette=settings.palette),
        max_steps=settings.max_steps,
        camera=settings.camera,
        variant=settings.variant,
    )
    try:
        return [record_episode(env, task, s, settings, episode_path(out_dir, task, s)) for s in seeds]
    finally:
        env.close()


def _ignore_sigint() -> None:
    """Worker initializer: Ctrl-C is the driver's to handle (it stops the workers itself)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def check_same_collection(out: Path, record: dict[str, Any]) -> None:
    """Refuse to mix settings (image size, tasks, distractors, ...) in one demonstration folder.

    The folder's collection.json holds the settings of the first collection; folders written
    before it existed are checked against the attributes of their episode files.
    """
    path = out / COLLECTION
    if path.is_file():
        from dtp.config_diff import config_differences

        diffs = config_differences(json.loads(path.read_text()), record)
    elif out.is_dir():
        diffs = []
        for task_dir in sorted(p for p in out.iterdir() if p.is_dir()):
            first = next(iter(sorted(task_dir.glob("ep_*.h5"))), None)
            if first is None:
                continue
            if task_dir.name not in record["tasks"]:
                diffs.append(f"tasks: {task_dir.name} in the folder, not asked for now")
            with h5py.File(first, "r") as f:
                for key in ("image_size", "palette", "camera", "max_steps"):
                    old = f.attrs.get(key)
                    old = old.item() if isinstance(old, np.generic) else old
                    if old is not None and old != record[key]:
                        diffs.append(f"{key}: {old!r} in the folder, {record[key]!r} now")
            if diffs:
                break
    else:
        return
    if diffs:
        raise ConfigError(
            f"{out} holds demonstrations collected with other settings ({'; '.join(diffs[:6])}). "
            "Collect into another --out folder, or rerun with that folder's settings"
        )


def _read_failed(out_dir: Path) -> set[tuple[str, int]]:
    path = out_dir / FAILED_LOG
    if not path.exists():
        return set()
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return {(r["task"], int(r["seed"])) for r in rows}


@dataclass
class _TaskProgress:
    """Scheduling state of one task: next index to try, successes, episodes running."""

    target: int
    next_index: int = 0
    done: int = 0
    existing: int = 0
    new: int = 0
    failed: int = 0
    in_flight: int = 0


def _record_settings(
    tasks: list[str], seed: int, image_size: int, distractor_count_range: tuple[int, int], palette: Any,
    camera: str | None, max_steps: int | None, post_success_steps: int, variant: str,
) -> RecordSettings:
    """Check the collection's arguments and fill in the defaults, before anything is written."""
    from dtp.envs.distractors import DistractorConfig
    from dtp.envs.metaworld_env import DEFAULT_MAX_STEPS
    from dtp.envs.rendering import DEFAULT_CAMERA

    for t in tasks:
        demo_seed(seed, t, 0)  # validates the task name and the base seed
    lo, hi = distractor_count_range
    if not 0 <= lo <= hi:
        raise ConfigError(f"distractor_count_range must satisfy 0 <= lo <= hi, got {distractor_count_range}")
    from dtp.envs.variants import get_variant

    get_variant(variant)  # validates the name
    palette = DistractorConfig(count=hi, palette=palette).palette  # validated (a mapping is copied)
    return RecordSettings(
        image_size=int(image_size),
        distractor_count_range=(int(lo), int(hi)),
        palette=palette,
        camera=camera or DEFAULT_CAMERA,
        max_steps=int(max_steps or DEFAULT_MAX_STEPS),
        post_success_steps=int(post_success_steps),
        variant=variant,
    )


def _open_collection(out_dir: str | Path, settings: RecordSettings, seed: int, tasks: list[str]) -> Path:
    """Create the folder and its collection.json, refusing a file or a folder of other settings."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} is a file, not a folder; name a folder for the demonstrations")
    record = {**asdict(settings), "distractor_count_range": list(settings.distractor_count_range),
              "seed": int(seed), "tasks": sorted(tasks)}
    check_same_collection(out, record)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / COLLECTION).is_file():
        (out / COLLECTION).write_text(json.dumps(record, indent=2))
    return out


class _Scheduler:
    """Which seeds to run next per task, and the bookkeeping of finished episodes (files, failures)."""

    def __init__(self, out: Path, tasks: list[str], episodes_per_task: int, seed: int, batch_size: int,
                 max_failures: int, bar: Any) -> None:
        self.out, self.tasks, self.seed, self.batch_size = out, tasks, seed, batch_size
        self.max_failures, self.bar = max_failures, bar
        self.failed_seen = _read_failed(out)
        self.state = {t: _TaskProgress(target=int(episodes_per_task)) for t in tasks}
        self.episode_seconds: list[float] = []

    def next_batch(self, task: str) -> list[int]:
        """Seeds to run next for `task`; counts files already on disk as done."""
        st, batch = self.state[task], []
        while (
            len(batch) < self.batch_size
            and st.done + st.in_flight + len(batch) < st.target
            and st.failed < self.max_failures
            and st.next_index < MAX_INDEX
        ):
            s = demo_seed(self.seed, task, st.next_index)
            st.next_index += 1
            if episode_path(self.out, task, s).exists():
                st.done += 1
                st.existing += 1
                self.bar.update(1)
            elif (task, s) not in self.failed_seen:
                batch.append(s)
        st.in_flight += len(batch)
        return batch

    def batches(self) -> Iterator[tuple[str, list[int]]]:
        """The next batch of every task that still needs episodes, in task order."""
        for t in self.tasks:
            b = self.next_batch(t)
            if b:
                yield t, b

    def handle(self, task: str, results: list[EpisodeResult]) -> None:
        """Count a finished batch; failed seeds are appended to failed.jsonl so a rerun skips them."""
        st = self.state[task]
        st.in_flight -= len(results)
        for r in results:
            self.episode_seconds.append(r.seconds)
            if r.success:
                st.done += 1
                st.new += 1
                self.bar.update(1)
            else:
                st.failed += 1
                log.warning("expert failed on %s seed %d after %d steps", task, r.seed, r.n_steps)
                with open(self.out / FAILED_LOG, "a") as f:
                    f.write(json.dumps({"task": task, "seed": r.seed, "n_steps": r.n_steps}) + "\n")


def _run_in_process(sched: _Scheduler, settings: RecordSettings) -> None:
    """workers <= 1: record every batch in this process, task by task, until none is left."""
    pending = list(sched.batches())
    while pending:
        for task, seeds in pending:
            sched.handle(task, _record_batch(str(sched.out), task, seeds, settings))
        pending = list(sched.batches())


def _run_in_pool(sched: _Scheduler, settings: RecordSettings, workers: int) -> None:
    """workers > 1: spawned processes, a few batches queued per worker; Ctrl-C stops them at once."""
    ctx = multiprocessing.get_context("spawn")
    before = set(multiprocessing.active_children())
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_ignore_sigint) as pool:
        futures: dict[cf.Future, str] = {}

        def submit_all() -> None:
            # keep a few batches queued per worker so no process idles
            while len(futures) < 2 * workers:
                nxt = next(sched.batches(), None)
                if nxt is None:
                    return
                task, seeds = nxt
                futures[pool.submit(_record_batch, str(sched.out), task, seeds, settings)] = task

        try:
            submit_all()
            while futures:
                finished, _ = cf.wait(futures, return_when=cf.FIRST_COMPLETED)
                for fut in finished:
                    sched.handle(futures.pop(fut), fut.result())
                submit_all()
        except KeyboardInterrupt:
            # Ctrl-C: stop our workers now rather than wait for their batches (episode files
            # are renamed into place whole, so a killed worker leaves no half episode)
            pool.shutdown(wait=False, cancel_futures=True)
            for proc in set(multiprocessing.active_children()) - before:
                proc.terminate()
            raise


def _summary(sched: _Scheduler, elapsed: float) -> dict[str, Any]:
    """The run's summary (per task counts, timings); warns of tasks short of their count."""
    state, episode_seconds = sched.state, sched.episode_seconds
    summary = {
        "out_dir": str(sched.out),
        "tasks": {
            t: {"episodes": st.done, "new": st.new, "existing": st.existing, "failed": st.failed}
            for t, st in state.items()
        },
        "seconds": round(elapsed, 2),
        "episode_seconds_mean": round(float(np.mean(episode_seconds)), 3) if episode_seconds else None,
        "wall_seconds_per_new_episode": round(elapsed / max(1, sum(st.new for st in state.values())), 3),
    }
    for t, st in state.items():
        if st.done < st.target:
            log.warning("%s: only %d of %d episodes (%d failures)", t, st.done, st.target, st.failed)
    log.info("demo collection: %s", summary)
    return summary


def collect_demos(
    out_dir: str | Path,
    tasks: Sequence[str],
    episodes_per_task: int,
    *,
    seed: int = 0,
    image_size: int = 96,
    distractor_count_range: tuple[int, int] = (0, 3),
    palette: Any = "train",
    workers: int = 2,
    progress: bool = True,
    camera: str | None = None,
    max_steps: int | None = None,
    post_success_steps: int = 5,
    batch_size: int = 4,
    max_failures_per_task: int | None = None,
    variant: str = DEFAULT_VARIANT,
) -> dict[str, Any]:
    """Record `episodes_per_task` successful expert episodes per task (resumable).

    Episode seeds come from `demo_seed(seed, task, index)`, index 0, 1, ...; an episode
    whose file exists is kept, a seed listed in failed.jsonl is skipped, a new failure
    is logged there and the next index is tried. workers > 1 uses that many spawned
    processes (each builds its own envs); workers <= 1 runs in this process.
    variant: the benchmark variant ("grounded" or "plain", see dtp.envs.variants).
    Returns a summary: per task episodes/new/existing/failed, seconds, seconds per episode.
    """
    tasks = list(dict.fromkeys(tasks))
    settings = _record_settings(tasks, seed, image_size, distractor_count_range, palette, camera, max_steps,
                                post_success_steps, variant)
    out = _open_collection(out_dir, settings, seed, tasks)
    max_failures = max_failures_per_task if max_failures_per_task is not None else max(10, episodes_per_task)
    bar = tqdm(total=len(tasks) * episodes_per_task, disable=not progress, desc="demos", unit="ep")
    sched = _Scheduler(out, tasks, episodes_per_task, seed, batch_size, max_failures, bar)
    start = time.perf_counter()
    try:
        if workers <= 1:
            _run_in_process(sched, settings)
        else:
            _run_in_pool(sched, settings, workers)
    finally:
        bar.close()
    return _summary(sched, time.perf_counter() - start)


def iter_demo_files(out_dir: str | Path, tasks: Sequence[str] | None = None) -> Iterator[Path]:
    """Episode files under `out_dir` (optionally only some tasks), sorted by task and seed."""
    root = Path(out_dir)
    dirs = [root / t for t in tasks] if tasks is not None else sorted(p for p in root.iterdir() if p.is_dir())
    for d in dirs:
        yield from sorted(d.glob("ep_*.h5"))


def load_episode(path: str | Path) -> dict[str, Any]:
    """One episode as numpy arrays ("images", "proprio", "actions") plus its attributes."""
    with h5py.File(path, "r") as f:
        episode: dict[str, Any] = {k: f[k][()] for k in ("images", "proprio", "actions")}
        for k, v in f.attrs.items():
            episode[k] = v.item() if isinstance(v, np.generic) else v
    return episode


def expert_success(
    task: str,
    seeds: Sequence[int],
    *,
    variant: str = DEFAULT_VARIANT,
    palette: Any = "train",
    distractors: int = 3,
    max_steps: int | None = None,
) -> list[dict[str, Any]]:
    """Run the scripted expert from each reset seed; one row per seed (success, steps, lookalikes).

    A check that a variant's scenes leave the task solvable (lookalikes and distractors are
    visual-only, so the expert, which reads the simulator state, should not notice them).
    """
    from dtp.envs.distractors import DistractorConfig
    from dtp.envs.metaworld_env import DEFAULT_MAX_STEPS, make_env

    env = make_env(task, distractors=DistractorConfig(count=distractors, palette=palette), variant=variant,
                   max_steps=int(max_steps or DEFAULT_MAX_STEPS))
    rows = []
    try:
        for seed in seeds:
            env.reset(seed=int(seed))
            lookalikes = len(env.scene.lookalikes)
            success, steps = False, 0
            while True:
                _, _, terminated, truncated, info = env.step(env.expert_action())
                steps += 1
                if terminated or truncated:
                    success = bool(info["success"])
                    break
            rows.append({"task": task, "seed": int(seed), "success": success, "steps": steps,
                         "lookalikes": lookalikes, "instruction": env.instruction})
    finally:
        env.close()
    return rows
