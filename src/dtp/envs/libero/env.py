"""One LIBERO task as a gymnasium env with the same observations and scene facts as `MetaWorldEnv`.

Scenes: a test scene is one of LIBERO's 50 fixed initial states per task (the field's protocol):
the reset seed of test scene i (`dtp.seeds.scene_seed(TEST_SEED, i)`) takes state i. Every other
seed (validation scenes, demonstrations) draws a placement from the env's own seeded sampler, so a
policy trained or tuned here never meets a test state. After a reset the env steps `settle_steps`
no-op actions so that objects come to rest, as openpi's and vla-eval's LIBERO clients do.

Images are robosuite's own camera frames turned 180 degrees (they come upside down), as the field
feeds them to policies. Actions are LIBERO's 7-dim OSC deltas; the gripper is snapped to -1/+1 by
its sign, as vla-eval does. Success is the BDDL goal (`check_success`).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import string
from typing import Any

import gymnasium as gym
import numpy as np

from ...errors import ConfigError
from ...seeds import TEST_SEED, seed_set_of
from ..scene import Scene
from .names import STATES_PER_TASK, load_suite, max_steps_for, split_name
from .scene_parts import SceneParts, label_tables, scene_parts

PROPRIO_DIM = 8  # eef xyz, eef axis-angle, two finger joints (openpi's and vla-eval's LIBERO state)
DEFAULT_IMAGE_SIZE = 128
SETTLE_ACTION = np.array([0.0] * 6 + [-1.0])
INSTRUCTION_SOURCES = ("bddl", "task")


def quat_to_axis_angle(quat: np.ndarray) -> np.ndarray:
    """Axis-angle (3,) of a robosuite (x, y, z, w) quaternion."""
    q = np.asarray(quat, dtype=np.float64)
    w = float(np.clip(q[3], -1.0, 1.0))
    den = math.sqrt(max(1.0 - w * w, 0.0))
    if den < 1e-8:
        return np.zeros(3, dtype=np.float32)
    return (q[:3] * 2.0 * math.acos(w) / den).astype(np.float32)


class LiberoEnv(gym.Env):
    """One LIBERO task: image + instruction + proprio observations, seeded resets.

    Observation: {"image": uint8 (S, S, 3) agentview, "instruction": str, "proprio": float32 (8,)}
    and "wrist_image" with `wrist=True`. Action: float32 (7,) in [-1, 1]. `terminated` is the BDDL
    goal; `truncated` is `max_steps` (the field's per-suite limit unless given).
    `reset(seed=s)`: a test seed takes its fixed initial state, any other seed a sampled placement;
    `options={"init_state": k}` takes official state k whatever the seed.
    instruction: "bddl" (default) or "task" (the sentence the field's LIBERO harnesses send).
    antialias: False renders without multisampling: about half the rendering time on a CPU, object
      edges not smoothed (a mean change of 2.3/255 per pixel at 128 px; docs/libero.md). Train and
      test with the same setting.
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, task: str, *, image_size: int = DEFAULT_IMAGE_SIZE, wrist: bool = False,
                 max_steps: int | None = None, settle_steps: int = 10, instruction: str = "bddl",
                 antialias: bool = True):
        suite, index = split_name(task)
        if index is None:
            raise ConfigError(f"LiberoEnv takes one task, e.g. {suite}/0; got the whole suite {task!r}")
        suite_obj = load_suite(suite)
        if not 0 <= index < suite_obj.n_tasks:
            raise ConfigError(f"LIBERO task {task!r}: {suite} has tasks 0..{suite_obj.n_tasks - 1}")
        if instruction not in INSTRUCTION_SOURCES:
            raise ConfigError(f"instruction must be one of {INSTRUCTION_SOURCES}, got {instruction!r}")
        if image_size < 16:
            raise ConfigError(f"image_size must be at least 16 pixels, got {image_size}")
        from libero.libero import get_libero_path
        from libero.libero.envs import OffScreenRenderEnv

        self.task_name, self.suite, self.index = f"{suite}/{index}", suite, index
        self.image_size, self.wrist = int(image_size), bool(wrist)
        self.max_steps = int(max_steps) if max_steps is not None else max_steps_for(suite)
        self.settle_steps = int(settle_steps)
        self.antialias = bool(antialias)
        self.render_mode = "rgb_array"
        info = suite_obj.get_task(index)
        self.bddl_file = os.path.join(get_libero_path("bddl_files"), info.problem_folder, info.bddl_file)
        self._init_states = suite_obj.get_task_init_states(index)  # (50, state dim)
        cameras = ["agentview"] + (["robot0_eye_in_hand"] if wrist else [])
        self._env = OffScreenRenderEnv(bddl_file_name=self.bddl_file, camera_heights=self.image_size,
                                       camera_widths=self.image_size, camera_names=cameras)
        # "bddl": the goal file's sentence (it carries the _lan/_task perturbations); "task": LIBERO's
        # task.language, what openpi's and vla-eval's LIBERO clients send ("pick up the ..." where the
        # BDDL of LIBERO-Object says "pick the ...")
        self._instruction = str(self._env.language_instruction if instruction == "bddl" else info.language)
        self._parts: SceneParts = scene_parts(self._env.env.parsed_problem, suite)
        self._raw_obs: dict[str, Any] | None = None
        self._scene: Scene | None = None
        self._seg_renderer = None
        self._labels: np.ndarray | None = None  # segmentation label per geom id of the current model
        self._steps = 0
        self._expert = None
        self.seed_used: int | None = None
        self.init_state_used: int | None = None

        size = self.image_size
        spaces = {
            "image": gym.spaces.Box(0, 255, shape=(size, size, 3), dtype=np.uint8),
            "instruction": gym.spaces.Text(max_length=256, charset=string.printable),
            "proprio": gym.spaces.Box(-np.inf, np.inf, shape=(PROPRIO_DIM,), dtype=np.float32),
        }
        if wrist:
            spaces["wrist_image"] = spaces["image"]
        self.observation_space = gym.spaces.Dict(spaces)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(7,), dtype=np.float32)

    # ----------------------------------------------------------------- gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Reset to a test state (test seeds, or options["init_state"]) or to a placement drawn from `seed`."""
        super().reset(seed=seed)
        if seed is None:
            seed = int(self.np_random.integers(2**31 - 1))
        state_index = (options or {}).get("init_state")
        where = seed_set_of(int(seed))
        if state_index is None and where is not None and where[0] == TEST_SEED:
            state_index = where[1]
        if state_index is not None and not 0 <= int(state_index) < len(self._init_states):
            raise ConfigError(f"LIBERO has {len(self._init_states)} test states per task "
                              f"(0..{len(self._init_states) - 1}); scene {state_index} does not exist")
        self.seed_used = int(seed)
        self.init_state_used = None if state_index is None else int(state_index)
        saved = np.random.get_state()  # LIBERO's placement sampler draws from NumPy's global generator
        try:
            np.random.seed(int(seed) % 2**32)
            with contextlib.redirect_stdout(io.StringIO()):
                self._make_context_current()  # a soft reset renders in ours; a hard one builds and makes current a new one
                obs = self._env.reset()
                if not self.antialias:  # the hard reset built a new model and render context
                    obs = self._without_multisampling()
                if state_index is not None:
                    obs = self._env.set_init_state(self._init_states[int(state_index)])
                for _ in range(self.settle_steps):
                    obs, _, _, _ = self._env.step(SETTLE_ACTION)
        finally:
            np.random.set_state(saved)
        self._raw_obs = obs
        self._steps = 0
        self._expert = None  # a fresh phase machine per episode
        self._close_seg_renderer()  # a hard reset rebuilt the MuJoCo model
        self._labels = label_tables(self.model, self._parts)
        self._scene = self._parts.scene(self.model, self.data, variant=self.suite,
                                        split="test" if state_index is not None else "sampled",
                                        seed=int(seed), instruction=self._instruction)
        return self._observation(), {"success": False, "seed": int(seed), "init_state": self.init_state_used}

    def step(self, action):
        """Apply a 7-dim OSC delta action; terminated on the BDDL goal, truncated at max_steps."""
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(7), -1.0, 1.0)
        a[6] = 1.0 if a[6] >= 0 else -1.0
        self._make_context_current()
        obs, reward, done, _ = self._env.step(a)
        self._raw_obs = obs
        self._steps += 1
        success = bool(self._env.check_success())
        truncated = self._steps >= self.max_steps
        return self._observation(), float(reward), success, truncated, {"success": success, "steps": self._steps}

    def render(self) -> np.ndarray:
        """The current agentview frame as the policy sees it, uint8 (S, S, 3)."""
        return self._observation()["image"]

    def close(self) -> None:
        """Free the segmentation renderer and the LIBERO env (its EGL context)."""
        self._close_seg_renderer()
        if getattr(self, "_env", None) is not None:
            self._env.close()
            self._env = None

    # ------------------------------------------------------------ extras
    def segmentation(self) -> np.ndarray:
        """Label map uint8 (S, S) of the current frame, aligned with `image` (labels: dtp.regions
        SEGMENTATION_LABELS: task object, goal, gripper, distractor, robot, added distractor)."""
        import mujoco

        if self._labels is None:
            raise RuntimeError("call reset() before segmentation()")
        if self._seg_renderer is None:
            self._seg_renderer = mujoco.Renderer(self.model, self.image_size, self.image_size)
            self._seg_renderer.enable_segmentation_rendering()
            self._seg_option = mujoco.MjvOption()
            self._seg_option.geomgroup[0] = 0  # robosuite hides collision meshes; so must we
        try:
            self._seg_renderer.update_scene(self.data, camera="agentview", scene_option=self._seg_option)
            seg = self._seg_renderer.render()
        finally:  # our renderer made its own GL context current: robosuite's camera must draw in its own again
            self._make_context_current()
        ids, types = seg[..., 0], seg[..., 1]
        labels = np.zeros(ids.shape, dtype=np.uint8)
        geom = (types == mujoco.mjtObj.mjOBJ_GEOM) & (ids >= 0)
        labels[geom] = self._labels[ids[geom]]
        return np.ascontiguousarray(labels[:, ::-1])  # MuJoCo's rows run bottom-up: this is the 180-degree turn

    def expert_action(self, *, recover: bool = False) -> np.ndarray:
        """The privileged pick-and-place expert's next action, float32 (7,) (dtp.envs.libero.expert);
        a ConfigError for a task whose goal is not a pick-and-place (open, turn on). recover: the expert
        starts over when the object is out of hand mid-carry (fixed at an episode's first call)."""
        if self._raw_obs is None:
            raise RuntimeError("call reset() before expert_action()")
        if self._expert is None:
            from .expert import PickPlaceExpert

            try:
                self._expert = PickPlaceExpert(self.robosuite_env, recover=recover)
            except ValueError as e:
                raise ConfigError(f"{self.task_name}: no scripted expert for this goal ({e})") from None
        return np.clip(np.asarray(self._expert.act(self._raw_obs), dtype=np.float32), -1.0, 1.0)

    @property
    def scene(self) -> Scene:
        """Objects of the last reset with their roles (task object, goal, distractors, added, robot, gripper)."""
        if self._scene is None:
            raise RuntimeError("call reset() before reading the scene")
        return self._scene

    @property
    def instruction(self) -> str:
        """The BDDL's language instruction (LIBERO's `task.language` misses the _lan/_task perturbations)."""
        return self._instruction

    @property
    def raw_observation(self) -> dict[str, Any]:
        """robosuite's observation dict of the last reset/step (object poses: the privileged experts read it)."""
        if self._raw_obs is None:
            raise RuntimeError("call reset() first")
        return self._raw_obs

    @property
    def robosuite_env(self) -> Any:
        """The underlying robosuite/LIBERO problem env (parsed BDDL, sim)."""
        return self._env.env

    @property
    def model(self):
        return self._env.sim.model._model

    @property
    def data(self):
        return self._env.sim.data._data

    # ------------------------------------------------------------ internals
    def _observation(self) -> dict[str, Any]:
        raw = self._raw_obs
        out = {
            "image": np.ascontiguousarray(raw["agentview_image"][::-1, ::-1]),
            "instruction": self._instruction,
            "proprio": np.concatenate([raw["robot0_eef_pos"], quat_to_axis_angle(raw["robot0_eef_quat"]),
                                       raw["robot0_gripper_qpos"]]).astype(np.float32),
        }
        if self.wrist:
            out["wrist_image"] = np.ascontiguousarray(raw["robot0_eye_in_hand_image"][::-1, ::-1])
        return out

    def _make_context_current(self) -> None:
        """Make robosuite's camera context the thread's current one before it renders: robosuite makes a
        context current only when it builds it, so with two envs in one process (a batched run) the
        other env's context would be current and this env's frames would come out as garbage."""
        ctx = getattr(getattr(self._env, "sim", None), "_render_context_offscreen", None)
        if ctx is not None:
            ctx.gl_ctx.make_current()

    def _without_multisampling(self) -> dict[str, Any]:
        """Rebuild robosuite's offscreen context with no multisampling; the observation re-rendered."""
        import mujoco

        self.model.vis.quality.offsamples = 0
        ctx = self._env.sim._render_context_offscreen
        ctx.gl_ctx.make_current()
        ctx.con.free()
        ctx.con = mujoco.MjrContext(self.model, mujoco.mjtFontScale.mjFONTSCALE_150)
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, ctx.con)
        return self._env.env._get_observations(force_update=True)

    def _close_seg_renderer(self) -> None:
        if self._seg_renderer is not None:
            self._seg_renderer.close()
            self._seg_renderer = None


def make_libero_env(task: str, *, image_size: int = DEFAULT_IMAGE_SIZE, wrist: bool = False,
                    max_steps: int | None = None) -> LiberoEnv:
    """Build the env of one LIBERO task ("libero_object/3"); see `LiberoEnv`."""
    return LiberoEnv(task, image_size=image_size, wrist=wrist, max_steps=max_steps)


__all__ = ["LiberoEnv", "make_libero_env", "quat_to_axis_angle", "PROPRIO_DIM", "STATES_PER_TASK"]
