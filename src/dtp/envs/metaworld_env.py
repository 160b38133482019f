"""Meta-World v3 tasks as a gymnasium env with images, instructions and distractors.

`make_env` builds one Meta-World env with randomized, seeded resets (object and goal
positions drawn from the reset seed, goal not clipped), adds this package's cameras and
distractor slots to its scene through `mujoco.MjSpec`, and renders observations with
`mujoco.Renderer`. The raw Meta-World state rides along in `info["state"]` so that the
scripted expert (`expert_action`) can act.
"""

from __future__ import annotations

import logging
import string
import warnings
from typing import Any

import gymnasium as gym
import numpy as np

from dtp.envs.distractors import (
    SLOT_PREFIX,
    Distractor,
    DistractorConfig,
    add_slots,
    apply_layout,
    sample_layout,
)
from dtp.envs.grounding import (
    REFERENTS,
    Grounding,
    add_lookalike_slots,
    apply_grounding,
    find_grounding_ids,
    sample_grounding,
)
from dtp.envs.metaworld_labels import (  # noqa: F401  (the label numbers are re-exported)
    BACKGROUND,
    DISTRACTOR,
    GOAL,
    GRIPPER,
    LOOKALIKE,
    ROBOT,
    ROBOT_ROOT,
    TASK_OBJECT,
    label_tables,
    robot_body_mask,
    subtree_mask,
)
from dtp.envs.scene import Scene, SceneObject
from dtp.envs.variants import DEFAULT_VARIANT, NEUTRAL_RGB, get_variant
from dtp.errors import ConfigError
from dtp.envs.rendering import (
    DEFAULT_CAMERA,
    UPSIDE_DOWN_CAMERAS,
    add_cameras,
    closer,
    make_renderer,
    mujoco,
)
from dtp.envs.tasks import TaskSpec, get_task, grounded_instruction_for, instruction_for, task_index

from metaworld.env_dict import ALL_V3_ENVIRONMENTS  # noqa: E402  (after the GL default)
from metaworld.policies import ENV_POLICY_MAP  # noqa: E402

log = logging.getLogger(__name__)

PROPRIO_DIM = 4  # hand xyz and gripper opening
PUCK_RGBA = (1.0, 0.85, 0.0, 1.0)  # the stock dark-red wood puck is a few dark pixels at 96 px
DEFAULT_MAX_STEPS = 150  # scripted experts finish in under 100 steps


def _build_metaworld(task: TaskSpec, slots: int, lookalikes: int = 0) -> Any:
    """A Meta-World env for `task` whose scene has our cameras, `slots` distractors, a bright puck,
    and copies of the task's named parts for up to `lookalikes` lookalikes (grounded variant).

    Also sets what seeded random resets need: full observability (goal in the state),
    no cached observation bounds (they clip the goal), unfrozen random vectors.
    """
    base = ALL_V3_ENVIRONMENTS[task.metaworld_id]

    def _initialize_simulation(self):
        scene = mujoco.MjSpec.from_file(self.fullpath)
        add_cameras(scene)
        add_slots(scene, slots)
        if lookalikes:
            add_lookalike_slots(scene, self.fullpath, task.name, lookalikes)
        puck = scene.geom("objGeom")
        if puck is not None and puck.parent.name == "obj":
            puck.material = ""
            puck.rgba = list(PUCK_RGBA)
        model = scene.compile()
        return model, mujoco.MjData(model)

    cls = type(f"Dtp{base.__name__}", (base,), {"_initialize_simulation": _initialize_simulation})
    env = cls()
    env._partially_observable = False
    env.__dict__.pop("sawyer_observation_space", None)  # cached bounds clip the goal
    env._freeze_rand_vec = False
    env._set_task_called = True
    env.seeded_rand_vec = True
    env.max_path_length = 1 << 30  # truncation is ours (max_steps)
    return env


class MetaWorldEnv(gym.Env):
    """One Meta-World task: image + instruction + proprio observations, seeded resets.

    Observation: {"image": uint8 (H, W, 3), "instruction": str, "proprio": float32 (4,)}.
    Action: float32 (4,) in [-1, 1] (hand xyz delta, gripper). `terminated` is Meta-World
    success; `truncated` is `max_steps` reached. `info` has "success" and "state" (the raw
    39-dim Meta-World state the scripted experts read).
    `reset(seed=s, options={"distractor_count": k})` shows k <= config.count distractors;
    `options={"lookalike_count": n}` fixes the number of lookalikes (grounded variant).
    variant: "grounded" (default: colours named in the instruction, lookalikes) or "plain"
    (the benchmark the shipped model was trained on); see `dtp.envs.variants`.
    After a reset, `scene` lists every object with its colour and ids.
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(
        self,
        task: str,
        *,
        image_size: int = 96,
        distractors: DistractorConfig = DistractorConfig(),
        max_steps: int = DEFAULT_MAX_STEPS,
        camera: str = DEFAULT_CAMERA,
        variant: str = DEFAULT_VARIANT,
    ):
        self.task = get_task(task)
        self.variant = get_variant(variant)
        self.image_size = int(image_size)
        self.distractor_config = distractors
        self.max_steps = int(max_steps)
        self.camera = camera
        self.render_mode = "rgb_array"
        self._lookalike_range = distractors.lookalike_range(self.variant)
        self._colours = distractors.colours(self.variant)
        self._shapes = distractors.shapes_for(self.variant)
        named = len(REFERENTS.get(self.task.name, ())) if self.variant.grounded else 0
        if self.variant.grounded and len(self._colours) < named + self._lookalike_range[1]:
            raise ConfigError(
                f"palette {distractors.split!r} has {len(self._colours)} colours; {self.task.name} in the "
                f"grounded variant needs {named + self._lookalike_range[1]} distinct ones "
                f"({named} named parts + up to {self._lookalike_range[1]} lookalikes)"
            )
        self._sim = _build_metaworld(self.task, distractors.count, self._lookalike_range[1] if named else 0)
        model = self._sim.model
        if mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera) < 0:
            cams = [model.camera(i).name for i in range(model.ncam)]
            self._sim.close()
            raise ValueError(f"unknown camera {camera!r}; available: {cams}")
        self._policy = ENV_POLICY_MAP[self.task.metaworld_id]()  # stateless, reused
        if self.variant.grounded:
            mujoco.mj_forward(model, self._sim.data)  # the copies' footprints need positions
            # parts the instruction never names must not wear a colour word: reach's unused
            # puck (yellow), drawer-open's pull-target marker (green)
            named = {r.role for r in REFERENTS.get(self.task.name, ())}
            puck = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, "objGeom")
            if "task_object" not in named and puck >= 0:
                model.geom_rgba[puck] = (*NEUTRAL_RGB, 1.0)
            if "goal" not in named and self.task.goal_site is not None:
                model.site_rgba[model.site(self.task.goal_site).id] = (*NEUTRAL_RGB, 1.0)
        self._grounding_ids = find_grounding_ids(
            model, self._sim.data, self.task.name, self._lookalike_range[1] if named else 0, self.task.object_bodies
        ) if self.variant.grounded else None
        self._grounding: Grounding | None = None
        self._scene: Scene | None = None
        self._geom_objects = np.full(model.ngeom, -1, dtype=np.int16)
        self._site_objects = np.full(model.nsite, -1, dtype=np.int16)
        self._geom_labels, self._site_labels = label_tables(
            model, self.task, distractors.count, self._grounding_ids)
        self._renderer: mujoco.Renderer | None = None
        self._state: np.ndarray | None = None
        self._layout: list[Distractor] = []
        self._instruction = ""
        self._steps = 0
        self.seed_used: int | None = None

        size = self.image_size
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(4,), dtype=np.float32)
        self.observation_space = gym.spaces.Dict(
            {
                "image": gym.spaces.Box(0, 255, shape=(size, size, 3), dtype=np.uint8),
                "instruction": gym.spaces.Text(
                    max_length=256, charset=string.ascii_lowercase + " "
                ),
                "proprio": gym.spaces.Box(-np.inf, np.inf, shape=(PROPRIO_DIM,), dtype=np.float32),
            }
        )

    # ----------------------------------------------------------------- gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Reset to the scene drawn from `seed` (object, goal, distractors, instruction)."""
        super().reset(seed=seed)
        if seed is None:
            seed = int(self.np_random.integers(2**31 - 1))
        count = int((options or {}).get("distractor_count", self.distractor_config.count))
        if not 0 <= count <= self.distractor_config.count:
            raise ValueError(
                f"distractor_count must be in [0, {self.distractor_config.count}], got {count}"
            )
        lookalikes = (options or {}).get("lookalike_count")
        lo, hi = self._lookalike_range
        if lookalikes is not None and not 0 <= int(lookalikes) <= hi:
            raise ValueError(f"lookalike_count must be in [0, {hi}], got {lookalikes}")
        self.seed_used = int(seed)
        self._sim.seed(int(seed))
        self._sim.reset()
        self._steps = 0
        rng = np.random.default_rng([int(seed), 0xD157])
        apply_layout(self._sim.model, [], self.distractor_config.count)
        mujoco.mj_forward(self._sim.model, self._sim.data)  # reset_model moves bodies without it
        self._state = self._fresh_state()
        keepout = self._keepout()
        if self._grounding_ids is not None:
            g_rng = np.random.default_rng([int(seed), task_index(self.task.name), 0x6A0D])
            n = int(g_rng.integers(lo, hi + 1)) if lookalikes is None else int(lookalikes)
            space = self._sim._random_reset_space
            self._grounding = sample_grounding(g_rng, self.task.name, self._grounding_ids, self._sim.data,
                                               self._colours, n, (space.low, space.high))
            apply_grounding(self._sim.model, self._grounding_ids, self._grounding)
            mujoco.mj_forward(self._sim.model, self._sim.data)
            for look in self._grounding.lookalikes:
                half = self._grounding_ids.slots[look.mimics][look.slot].half_extent
                keepout.append((np.asarray(look.pos[:2]), float(np.linalg.norm(half))))
            self._instruction = grounded_instruction_for(
                self.task.name, seed, {role: name for role, (name, _) in self._grounding.colours.items()}
            )
        else:
            self._instruction = instruction_for(self.task.name, seed)
        accept = self._visible_table_test() if count else None
        if self.variant.grounded:  # generic distractors never take a named colour
            named = {name for name, _ in self._grounding.colours.values()} if self._grounding else set()
            palette = {k: v for k, v in self._colours.items() if k not in named}
            self._layout = sample_layout(rng, count, self.distractor_config, keepout, accept,
                                         palette=palette, shapes=self._shapes)
        else:
            self._layout = sample_layout(rng, count, self.distractor_config, keepout, accept)
        apply_layout(self._sim.model, self._layout, self.distractor_config.count)
        mujoco.mj_forward(self._sim.model, self._sim.data)
        self._scene = self._build_scene()
        info = {"success": False, "state": self._state.copy(), "seed": int(seed)}
        return self._observation(), info

    def step(self, action):
        """Apply a Meta-World action; terminated on success, truncated at max_steps."""
        a = np.clip(np.asarray(action, dtype=np.float32).reshape(4), -1.0, 1.0)
        state, reward, _, _, mw_info = self._sim.step(a)
        self._state = state
        self._steps += 1
        success = bool(mw_info.get("success", 0.0))
        info = {k: float(v) for k, v in mw_info.items() if k != "success"}
        info.update(success=success, state=state.copy(), steps=self._steps)
        truncated = self._steps >= self.max_steps
        return self._observation(), float(reward), success, truncated, info

    def render(self) -> np.ndarray:
        """The current camera frame, uint8 (H, W, 3)."""
        return self._render(segmentation=False)

    def close(self) -> None:
        """Free the GL renderer (EGL prints errors at exit otherwise) and the simulator."""
        if self._renderer is not None:
            self._close_renderer()
            self._renderer = None
        if self._sim is not None:
            self._sim.close()
            self._sim = None

    # ------------------------------------------------------------ extras
    def expert_action(self) -> np.ndarray:
        """The Meta-World scripted policy's action for the current state, float32 (4,)."""
        if self._state is None:
            raise RuntimeError("call reset() before expert_action()")
        with warnings.catch_warnings():  # the policies warn whenever they saturate
            warnings.simplefilter("ignore", UserWarning)
            action = self._policy.get_action(self._state)
        return np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0)

    def segmentation(self) -> np.ndarray:
        """Label map uint8 (H, W) of the current frame, same camera as the image.

        0 background/other, 1 task object, 2 goal site (when drawn), 3 gripper/hand,
        4 generic distractors, 5 lookalikes (the whole copy, a button's housing included),
        6 the robot's own body (arm, pedestal, head: everything of the Sawyer but the hand).
        """
        seg = self._render(segmentation=True)
        ids, types = seg[..., 0], seg[..., 1]
        labels = np.zeros(ids.shape, dtype=np.uint8)
        geom = (types == mujoco.mjtObj.mjOBJ_GEOM) & (ids >= 0)
        site = (types == mujoco.mjtObj.mjOBJ_SITE) & (ids >= 0)
        labels[geom] = self._geom_labels[ids[geom]]
        labels[site] = self._site_labels[ids[site]]
        return labels

    def instance_segmentation(self) -> np.ndarray:
        """int16 (H, W): index into `scene.objects` of the object each pixel shows, -1 elsewhere.

        Tells a lookalike from the object it copies (`segmentation` gives both label kinds only).
        """
        seg = self._render(segmentation=True)
        ids, types = seg[..., 0], seg[..., 1]
        out = np.full(ids.shape, -1, dtype=np.int16)
        geom = (types == mujoco.mjtObj.mjOBJ_GEOM) & (ids >= 0)
        site = (types == mujoco.mjtObj.mjOBJ_SITE) & (ids >= 0)
        out[geom] = self._geom_objects[ids[geom]]
        out[site] = self._site_objects[ids[site]]
        return out

    @property
    def scene(self) -> Scene:
        """Objects placed at the last reset: task object, goal, gripper, lookalikes, distractors."""
        if self._scene is None:
            raise RuntimeError("call reset() before reading the scene")
        return self._scene

    @property
    def grounding(self) -> Grounding | None:
        """Colours and lookalikes of the last reset (None in the plain variant)."""
        return self._grounding

    @property
    def state(self) -> np.ndarray:
        """The raw Meta-World state vector (39,) after the last reset/step."""
        return self._state.copy()

    @property
    def distractors(self) -> list[Distractor]:
        """The distractors placed at the last reset."""
        return list(self._layout)

    @property
    def instruction(self) -> str:
        return self._instruction

    @property
    def sim(self) -> Any:
        """The underlying Meta-World env (model, data, positions)."""
        return self._sim

    def keepout_discs(self) -> list[tuple[np.ndarray, float]]:
        """(xy, radius) discs the distractors kept clear of at the last reset."""
        return self._keepout()

    # ------------------------------------------------------------ internals
    def _observation(self) -> dict[str, Any]:
        return {
            "image": self._render(segmentation=False),
            "instruction": self._instruction,
            "proprio": self._state[:PROPRIO_DIM].astype(np.float32),
        }

    def _render(self, segmentation: bool) -> np.ndarray:
        if self._renderer is None:
            self._renderer = make_renderer(self._sim.model, self.image_size)
            self._close_renderer = closer(self._renderer)
        r = self._renderer
        if segmentation:
            r.enable_segmentation_rendering()
        try:
            r.update_scene(self._sim.data, camera=self.camera)
            frame = r.render()
        finally:
            if segmentation:
                r.disable_segmentation_rendering()
        if self.camera in UPSIDE_DOWN_CAMERAS:
            frame = frame[::-1, ::-1]
        return np.ascontiguousarray(frame)

    def _fresh_state(self) -> np.ndarray:
        """Meta-World's reset state recomputed after mj_forward.

        Some tasks (drawer-open) move bodies in reset_model without a forward pass, so
        the state `reset()` returns holds the previous episode's object position.
        """
        sim = self._sim
        current = sim._get_curr_obs_combined_no_goal()
        sim._prev_obs = current.copy()  # what the next step's frame stack starts from
        return np.hstack([current, current, sim._get_pos_goal()]).astype(np.float64)

    def _visible_table_test(self):
        """A test: does a world point project onto table the camera sees (not the arm)?

        Renders one segmentation frame of the scene without distractors and looks up
        the 3x3 pixels around the point's projection.
        """
        model, data = self._sim.model, self._sim.data
        seg = self._render(segmentation=True)
        table = subtree_mask(model, [model.body("tablelink").id])
        cam = model.camera(self.camera).id
        pos, rot = data.cam_xpos[cam], data.cam_xmat[cam].reshape(3, 3)
        size = self.image_size
        focal = 0.5 * size / np.tan(np.radians(model.cam_fovy[cam]) / 2)
        turned = self.camera in UPSIDE_DOWN_CAMERAS

        def visible(point: np.ndarray) -> bool:
            x, y, z = rot.T @ (point - pos)
            if z >= 0:  # behind the camera (it looks along its -z axis)
                return False
            u = int(round(size / 2 + focal * x / -z))
            v = int(round(size / 2 - focal * y / -z))
            if turned:
                u, v = size - 1 - u, size - 1 - v
            if not (1 <= u < size - 1 and 1 <= v < size - 1):
                return False
            patch = seg[v - 1 : v + 2, u - 1 : u + 2]
            is_geom = (patch[..., 1] == mujoco.mjtObj.mjOBJ_GEOM) & (patch[..., 0] >= 0)
            return bool(is_geom.all() and table[model.geom_bodyid[patch[..., 0]]].all())

        return visible

    def _keepout(self) -> list[tuple[np.ndarray, float]]:
        """Task parts distractors must keep clear of: keepout bodies, goal, hand."""
        data, state = self._sim.data, self._state
        discs = [(data.body(name).xpos[:2].copy(), r) for name, r in self.task.keepout]
        discs.append((state[4:6].copy(), 0.03))  # Meta-World's object point (puck, handle, button)
        discs.append((state[-3:-1].copy(), 0.03))  # goal
        discs.append((np.asarray(self._sim.tcp_center)[:2].copy(), 0.05))
        return discs

    def _build_scene(self) -> Scene:
        """The Scene of the current reset, and the geom/site -> object index tables."""
        model, data = self._sim.model, self._sim.data
        objects: list[SceneObject] = []
        colours = self._grounding.colours if self._grounding is not None else {}

        def subtree_ids(roots: list[int]) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
            inside = subtree_mask(model, roots) if roots else np.zeros(model.nbody, bool)
            return (tuple(np.flatnonzero(inside).tolist()), tuple(np.flatnonzero(inside[model.geom_bodyid]).tolist()),
                    tuple(np.flatnonzero(inside[model.site_bodyid]).tolist()))

        shapes = {r.role: r.shape for r in REFERENTS.get(self.task.name, ())}
        if self.task.object_bodies:
            roots = [model.body(b).id for b in self.task.object_bodies]
            bodies, geoms, sites = subtree_ids(roots)
            name, rgb = colours.get("task_object", (None, None))
            objects.append(SceneObject("task_object", "task_object", shapes.get("task_object", "object"), name, rgb,
                                       tuple(float(v) for v in data.xpos[roots[0]]), None, bodies, geoms, sites))
        if self.task.goal_site is not None and "goal" in shapes:
            site = model.site(self.task.goal_site).id
            name, rgb = colours.get("goal", (None, None))
            objects.append(SceneObject("goal", "goal", shapes["goal"], name, rgb,
                                       tuple(float(v) for v in data.site_xpos[site]), None, (), (), (site,)))
        bodies, geoms, sites = subtree_ids([model.body("right_hand").id])
        objects.append(SceneObject("gripper", "gripper", "gripper", None, None,
                                   tuple(float(v) for v in data.xpos[model.body("right_hand").id]), None,
                                   bodies, geoms, sites))
        for i, look in enumerate(self._grounding.lookalikes if self._grounding is not None else ()):
            part = self._grounding_ids.slots[look.mimics][look.slot]
            pos = tuple(float(v) for v in data.xpos[part.object_bodies[0]])  # as the real one's: its object body
            objects.append(SceneObject(f"lookalike_{i}", "lookalike", look.shape, look.colour, look.rgb, pos,
                                       look.mimics, tuple(part.object_bodies), tuple(part.object_geoms), ()))
        for i, d in enumerate(self._layout):
            body = model.body(f"{SLOT_PREFIX}{i}").id
            geom = model.geom(f"{SLOT_PREFIX}{i}").id
            objects.append(SceneObject(f"distractor_{i}", "distractor", d.shape, d.colour, tuple(d.rgba[:3]), d.pos,
                                       None, (body,), (geom,), ()))
        robot = robot_body_mask(model)
        bodies = tuple(np.flatnonzero(robot).tolist())
        objects.append(SceneObject("robot", "robot", "robot", None, None,
                                   tuple(float(v) for v in data.xpos[model.body(ROBOT_ROOT).id]), None, bodies,
                                   tuple(np.flatnonzero(robot[model.geom_bodyid]).tolist()),
                                   tuple(np.flatnonzero(robot[model.site_bodyid]).tolist())))  # last: earlier indices keep
        self._geom_objects[:] = -1
        self._site_objects[:] = -1
        for index, o in enumerate(objects):
            self._geom_objects[list(o.geom_ids)] = index
            self._site_objects[list(o.site_ids)] = index
        return Scene(self.variant.name, self.distractor_config.split, int(self.seed_used), self._instruction,
                     tuple(objects))


def make_env(
    task: str,
    *,
    image_size: int = 96,
    distractors: DistractorConfig = DistractorConfig(),
    max_steps: int = DEFAULT_MAX_STEPS,
    camera: str = DEFAULT_CAMERA,
    variant: str = DEFAULT_VARIANT,
) -> MetaWorldEnv:
    """Build the gymnasium env for `task` (a name in `TASKS`) in `variant`; see `MetaWorldEnv`."""
    return MetaWorldEnv(
        task, image_size=image_size, distractors=distractors, max_steps=max_steps, camera=camera,
        variant=variant,
    )


def expert_action(env: gym.Env) -> np.ndarray:
    """The scripted expert's action for `env`'s current state (function form)."""
    return env.unwrapped.expert_action()
