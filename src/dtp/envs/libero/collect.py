"""Expert demonstrations on LIBERO tasks, in the HDF5 layout of `dtp.envs.demos` (resumable).

Layout of `out_dir/<suite>/<index>/ep_<seed:06d>.h5`:
    images        uint8   (T, S, S, 3)  agentview frame before each action (upright, as the policy sees it)
    wrist_images  uint8   (T, S, S, 3)  wrist frame, only with wrist=True
    proprio       float32 (T, 8)        eef xyz, eef axis-angle, finger joints
    actions       float32 (T, 7)        expert action (OSC deltas, gripper -1/+1)
    attrs: task, instruction, seed, success, n_steps, success_step, image_size, max_steps,
           format_version, benchmark ("libero"), variant (the suite), scene (JSON)
Scenes are sampled placements (demo seeds below 1e6), never LIBERO's fixed test states.

With a policy (DAgger, Ross et al. 2011), the policy moves the robot (the expert's action is executed
instead with probability `beta` at each step) and the expert, starting over when the object is out of
hand, labels every step it reached. Those episodes are written whether or not they succeed (attrs
`labels` = "expert", `policy`, `beta`): their actions are the expert's labels, not the moves that failed.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from ...errors import ConfigError
from ..demos import COLLECTION, FAILED_LOG, FORMAT_VERSION, _read_failed, _write_episode, check_same_collection
from .names import split_name

log = logging.getLogger(__name__)

MAX_TASKS = 100  # LIBERO-90 has 90
MAX_EPISODES = 1000  # tries (successes and failures) per task and base seed
MAX_BASE_SEED = 10


def libero_demo_seed(seed: int, task: str, index: int) -> int:
    """Reset seed of the `index`-th try on `task` for base `seed`: 100000 * seed + 1000 * task index
    + index, below 1e6 where the evaluation seeds (and with them LIBERO's test states) begin."""
    _, task_index = split_name(task)
    if task_index is None:
        raise ConfigError(f"{task!r} is a suite; demonstrations are per task (expand it first)")
    if not 0 <= seed < MAX_BASE_SEED:
        raise ConfigError(f"demo base seed must be in [0, {MAX_BASE_SEED}), got {seed}")
    if not 0 <= index < MAX_EPISODES or not 0 <= task_index < MAX_TASKS:
        raise ConfigError(f"{task}: at most {MAX_EPISODES} tries per task and {MAX_TASKS} tasks per suite")
    return 100_000 * seed + 1000 * task_index + index


def libero_episode_path(out_dir: str | Path, task: str, seed: int) -> Path:
    return Path(out_dir) / task / f"ep_{seed:06d}.h5"


@dataclass(frozen=True)
class LiberoRecordSettings:
    image_size: int
    wrist: bool
    post_success_steps: int
    antialias: bool = True


@dataclass(frozen=True)
class PolicyDriver:
    """DAgger: `policy` (a DTPPolicy) moves the robot; at each step the expert's own action is executed
    instead with probability `beta` (a per-episode generator seeded by the reset seed)."""

    policy: Any
    beta: float
    name: str  # the checkpoint, as recorded in the files

    def rng(self, seed: int) -> np.random.Generator:
        return np.random.default_rng([int(seed), 0xDA66E])


def record_libero_episode(env: Any, seed: int, settings: LiberoRecordSettings, path: Path,
                          driver: PolicyDriver | None = None) -> tuple[bool, int]:
    """Run the expert (or the driver's policy, labelled by the expert) from reset `seed`; write `path`
    if the goal is reached, or always when a driver ran. (success, steps)."""
    obs, _ = env.reset(seed=seed)
    scene = env.scene.to_dict()
    frames: dict[str, list] = {"images": [], "wrist_images": [], "proprio": [], "actions": []}
    success_step = None
    if driver is not None:
        driver.policy.reset(seed)
        rng = driver.rng(seed)
    while True:
        action = env.expert_action(recover=driver is not None)
        frames["images"].append(obs["image"])
        if settings.wrist:
            frames["wrist_images"].append(obs["wrist_image"])
        frames["proprio"].append(obs["proprio"])
        frames["actions"].append(action)
        if driver is not None and rng.random() >= driver.beta:
            action = np.asarray(driver.policy.step(obs).action, dtype=np.float32)
        obs, _, _, truncated, info = env.step(action)
        if info["success"] and success_step is None:
            success_step = len(frames["actions"])
        if success_step is not None and len(frames["actions"]) >= success_step + settings.post_success_steps:
            break
        if truncated:
            break
    n = len(frames["actions"])
    if success_step is None and driver is None:
        return False, n
    arrays = {"images": np.stack(frames["images"]), "proprio": np.stack(frames["proprio"]).astype(np.float32),
              "actions": np.stack(frames["actions"]).astype(np.float32)}
    attrs = {"task": env.task_name, "instruction": env.instruction, "seed": int(seed), "success": success_step is not None,
             "n_steps": n, "success_step": -1 if success_step is None else int(success_step),
             "image_size": settings.image_size,
             "max_steps": env.max_steps, "format_version": FORMAT_VERSION, "benchmark": "libero",
             "variant": env.suite, "scene": json.dumps(scene), "antialias": settings.antialias}
    if driver is not None:
        attrs.update(labels="expert", policy=driver.name, beta=float(driver.beta))
    _write_episode(path, **arrays, attrs=attrs)
    if settings.wrist:
        import h5py

        with h5py.File(path, "a") as f:
            f.create_dataset("wrist_images", data=np.stack(frames["wrist_images"]),
                             chunks=(1, *arrays["images"].shape[1:]), compression="lzf")
    return success_step is not None, n


def collect_libero_demos(out_dir: str | Path, tasks: Sequence[str], episodes_per_task: int, *, seed: int = 0,
                         image_size: int = 128, wrist: bool = False, post_success_steps: int = 5,
                         max_failures_per_task: int | None = None, progress: bool = True,
                         antialias: bool = True, driver: PolicyDriver | None = None,
                         max_steps: int | None = None) -> dict[str, Any]:
    """Record `episodes_per_task` successful expert episodes per LIBERO task, in this process; with a
    `driver` (its policy moves the robot), `episodes_per_task` DAgger episodes, failed or not.

    Resumable like `dtp.envs.demos.collect_demos`: existing files count, seeds in failed.jsonl are
    skipped, a new failure is logged there and the next seed tried. Returns a summary per task.
    """
    if driver is not None and not 0.0 <= driver.beta < 1.0:
        raise ConfigError(f"beta (the expert's share of executed steps) must lie in [0, 1), got {driver.beta}")
    from ..benchmark import expand_tasks, make_env

    tasks = list(expand_tasks(tasks))
    for t in tasks:
        libero_demo_seed(seed, t, 0)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} is a file, not a folder; name a folder for the demonstrations")
    record = {"benchmark": "libero", "image_size": int(image_size), "wrist": bool(wrist), "antialias": bool(antialias),
              "post_success_steps": int(post_success_steps), "seed": int(seed), "tasks": sorted(tasks)}
    if driver is not None:
        record.update(policy=driver.name, beta=float(driver.beta))
    if max_steps is not None:  # None: the suite's own limit (recorded in each file)
        record["max_steps"] = int(max_steps)
    check_same_collection(out, record)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / COLLECTION).is_file():
        (out / COLLECTION).write_text(json.dumps(record, indent=2))
    settings = LiberoRecordSettings(int(image_size), bool(wrist), int(post_success_steps), bool(antialias))
    failed_seen = _read_failed(out)
    max_failures = max_failures_per_task if max_failures_per_task is not None else max(10, episodes_per_task)
    summary: dict[str, Any] = {"out_dir": str(out), "tasks": {}}
    bar = tqdm(total=len(tasks) * episodes_per_task, disable=not progress, desc="demos", unit="ep")
    start = time.perf_counter()
    try:
        for task in tasks:
            counts = {"episodes": 0, "new": 0, "existing": 0, "failed": 0}
            env = None
            try:
                for index in range(MAX_EPISODES):
                    if counts["episodes"] >= episodes_per_task or counts["failed"] >= max_failures:
                        break
                    s = libero_demo_seed(seed, task, index)
                    path = libero_episode_path(out, task, s)
                    if path.exists():
                        counts["episodes"] += 1
                        counts["existing"] += 1
                        bar.update(1)
                        continue
                    if (task, s) in failed_seen:
                        continue
                    if env is None:
                        limit = {} if max_steps is None else {"max_steps": int(max_steps)}
                        env = make_env(task, image_size=image_size, wrist=wrist, antialias=antialias, **limit)
                    ok, steps = record_libero_episode(env, s, settings, path, driver)
                    if ok or driver is not None:
                        counts["episodes"] += 1
                        counts["new"] += 1
                        bar.update(1)
                    else:
                        counts["failed"] += 1
                        log.warning("expert failed on %s seed %d after %d steps", task, s, steps)
                        with open(out / FAILED_LOG, "a") as f:
                            f.write(json.dumps({"task": task, "seed": s, "n_steps": steps}) + "\n")
            finally:
                if env is not None:
                    env.close()
            summary["tasks"][task] = counts
    finally:
        bar.close()
    summary["seconds"] = round(time.perf_counter() - start, 2)
    return summary

