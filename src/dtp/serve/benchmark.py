"""Our Meta-World distractor benchmark as a vla-eval benchmark, so `vla-eval` can evaluate any model server on it.

In a vla-eval config: `benchmark: "dtp.serve.benchmark:MetaWorldDistractors"`, `params:` any of
the constructor's arguments. Scenes are the ones `dtp eval` uses: episode i of seed set s is
scene `1_000_000 + 10_000 * s + i` (never a demonstration scene), so a vla-eval run and
`dtp eval` see the same scenes. The scene seed goes to the model server in EPISODE_START's
task ("seed"); a DTP server resets its policy with it, matching in-process `run_episode`.

Observation sent: {"images": {"dtp_main": uint8 (S, S, 3)}, "task_description": str,
"state": float32 (4,) hand xyz + gripper}. Action expected: {"actions": (4,)} hand xyz delta and
gripper effort (positive closes), each in [-1, 1].
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from vla_eval.benchmarks.base import StepBenchmark, StepResult
from vla_eval.specs import IMAGE_RGB, LANGUAGE, POSITION_DELTA, DimSpec

from .. import seeds
from ..envs.benchmark import benchmark_env
from ..envs.distractors import DistractorConfig
from ..envs.metaworld_env import DEFAULT_MAX_STEPS
from ..envs.rendering import DEFAULT_CAMERA
from ..envs.tasks import TASK_NAMES
from ..envs.variants import DEFAULT_VARIANT, get_variant
from ..errors import ConfigError

__all__ = ["MetaWorldDistractors", "METAWORLD_ACTION_SPEC", "scene_seed"]

GRIPPER_EFFORT = DimSpec("gripper", 1, "effort_close_positive", (-1, 1), description="Meta-World grab effort")
METAWORLD_ACTION_SPEC: dict[str, DimSpec] = {"position": POSITION_DELTA, "gripper": GRIPPER_EFFORT}
STATE_SPEC = DimSpec("state", 4, "hand_xyz3_gripper1", description="Meta-World hand position and gripper opening")


def scene_seed(seed_set: int, episode: int) -> int:
    """The scene of episode `episode` in seed set `seed_set` (dtp.seeds, as dtp.eval's EvalSpec.seeds)."""
    return seeds.scene_seed(seed_set, episode)


class MetaWorldDistractors(StepBenchmark):
    """Meta-World tasks with distractor objects (train or held-out palette), seeded scenes.

    variant: "grounded" (colours named in the instruction, lookalikes) or "plain"; lookalikes: a
    count or (lo, hi) per grounded scene, None for the split's range (see dtp.envs.variants).
    """

    render_backends = frozenset({"gpu", "cpu"})

    @classmethod
    def configure_render(cls, mode: str) -> dict[str, str]:
        """MuJoCo through EGL: NVIDIA's on a GPU box, Mesa's on the CPU (an existing MUJOCO_GL wins)."""
        os.environ.setdefault("MUJOCO_GL", "egl")
        return {"MUJOCO_GL": os.environ["MUJOCO_GL"]}

    def __init__(
        self,
        tasks: list[str] | tuple[str, ...] = TASK_NAMES,
        distractors: int = 3,
        palette: str = "train",
        variant: str = DEFAULT_VARIANT,
        lookalikes: int | tuple[int, int] | None = None,
        image_size: int = 96,
        max_steps: int = DEFAULT_MAX_STEPS,
        seed: int = 0,
        diagnostics: bool = False,
    ):
        super().__init__()
        if isinstance(tasks, str):
            tasks = [t.strip() for t in tasks.split(",") if t.strip()]
        unknown = sorted(set(tasks) - set(TASK_NAMES))
        if unknown or not tasks:
            raise ConfigError(f"tasks must be a non-empty subset of {list(TASK_NAMES)}, got {list(tasks)}")
        if max_steps < 1:
            raise ConfigError(f"max_steps must be >= 1, got {max_steps}")
        self.tasks = tuple(tasks)
        self.distractors = int(distractors)
        self.palette = palette
        get_variant(variant)  # ConfigError naming the known variants
        self.variant = variant
        self.lookalikes = DistractorConfig(lookalikes=lookalikes).lookalikes if lookalikes is not None else None
        self.image_size = int(image_size)
        self.max_steps = int(max_steps)
        self.seed = int(seed)
        self.diagnostics = bool(diagnostics)  # ask a DTP server for per-step diagnostics, recorded per step
        self._env: Any = None
        self._env_task: str | None = None

    # -- data
    def get_tasks(self) -> list[dict[str, Any]]:
        return [{"name": t, "suite": "metaworld-distractors"} for t in self.tasks]

    def get_metadata(self) -> dict[str, Any]:
        return {"max_steps": self.max_steps, "action_dim": 4, "seed_set": self.seed, "variant": self.variant}

    def get_action_spec(self) -> dict[str, DimSpec]:
        return dict(METAWORLD_ACTION_SPEC)

    def get_observation_spec(self) -> dict[str, DimSpec]:
        return {"image": IMAGE_RGB, "language": LANGUAGE, "state": STATE_SPEC}

    # -- episode
    def reset(self, task: dict[str, Any]) -> Any:
        name = task["name"]
        if self._env_task != name:
            self.cleanup()
            self._env = benchmark_env(name, distractors=self.distractors, palette=self.palette,
                                      image_size=self.image_size, max_steps=self.max_steps,
                                      variant=self.variant, lookalikes=self.lookalikes)
            self._env_task = name
        seed = scene_seed(self.seed, int(task.get("episode_idx", 0)))
        task["seed"] = seed  # the runner sends the task (with this seed) in EPISODE_START, after this reset
        obs, _ = self._env.reset(seed=seed)
        return obs

    def make_obs(self, raw_obs: Any, task: dict[str, Any]) -> dict[str, Any]:
        obs = {
            "images": {DEFAULT_CAMERA: raw_obs["image"]},
            "task_description": raw_obs["instruction"],
            "state": np.asarray(raw_obs["proprio"], dtype=np.float32),
        }
        if self.diagnostics:
            obs["dtp_diagnostics"] = True
        return obs

    def step(self, action: dict[str, Any]) -> StepResult:
        a = np.asarray(action["actions"], dtype=np.float32).reshape(-1)
        if a.shape[0] != 4:
            raise ValueError(f"Meta-World takes 4 action values (xyz delta, gripper), got {a.shape[0]}")
        obs, reward, terminated, truncated, info = self._env.step(a)
        row: dict[str, Any] = {"action": a, "reward": float(reward), "success": bool(info["success"])}
        dtp = action.get("dtp")
        if isinstance(dtp, dict):
            row.update({k: dtp[k] for k in ("fired", "n_pruned", "margin", "tokens") if k in dtp})
        self._recorder.record_step(**row)
        return StepResult(obs=obs, reward=float(reward), done=bool(terminated or truncated), info=info)

    def get_step_result(self, step_result: StepResult) -> dict[str, Any]:
        return {"success": bool(step_result.info.get("success", False))}

    def render(self) -> np.ndarray | None:
        return self._env.render() if self._env is not None else None

    def cleanup(self) -> None:
        if self._env is not None:
            self._env.close()
        self._env, self._env_task = None, None
