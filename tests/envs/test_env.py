"""The gymnasium env: seeded resets, observations, experts, distractors, segmentation."""

import numpy as np
import pytest

from dtp.envs import TASKS, DistractorConfig, UnknownTaskError, make_env
from dtp.envs.distractors import PALETTES, SHAPES
from dtp.envs.metaworld_env import BACKGROUND, DISTRACTOR, GOAL, GRIPPER, ROBOT, TASK_OBJECT


@pytest.fixture
def push_env():
    env = make_env("push", distractors=DistractorConfig(count=3), variant="plain")
    yield env
    env.close()


def test_unknown_task_raises():
    with pytest.raises(UnknownTaskError, match="pick-place"):
        make_env("open-the-pod-bay-doors")


def test_observation_format(push_env):
    obs, info = push_env.reset(seed=0)
    assert obs["image"].dtype == np.uint8 and obs["image"].shape == (96, 96, 3)
    assert obs["proprio"].dtype == np.float32 and obs["proprio"].shape == (4,)
    assert obs["instruction"] in TASKS["push"].templates
    assert push_env.observation_space.contains(obs)
    assert info["state"].shape == (39,)
    obs, reward, terminated, truncated, info = push_env.step(np.zeros(4, np.float32))
    assert isinstance(info["success"], bool) and not terminated and not truncated
    np.testing.assert_allclose(obs["proprio"][:3], info["state"][:3], atol=1e-6)


def test_same_seed_same_frame_different_seed_different_scene(push_env):
    a, info_a = push_env.reset(seed=7)
    b, info_b = push_env.reset(seed=7)
    assert a["image"].tobytes() == b["image"].tobytes()
    assert a["instruction"] == b["instruction"]
    np.testing.assert_array_equal(info_a["state"], info_b["state"])
    other = make_env("push", distractors=DistractorConfig(count=3), variant="plain")
    try:
        c, _ = other.reset(seed=7)
        assert a["image"].tobytes() == c["image"].tobytes()  # across instances too
    finally:
        other.close()
    _, info_d = push_env.reset(seed=8)
    assert np.linalg.norm(info_a["state"][4:7] - info_d["state"][4:7]) > 1e-3  # puck moved
    assert np.linalg.norm(info_a["state"][-3:] - info_d["state"][-3:]) > 1e-3  # goal moved


@pytest.mark.parametrize("task", sorted(TASKS))
def test_goal_changes_with_seed(task):
    env = make_env(task)
    try:
        goals = {tuple(np.round(env.reset(seed=s)[1]["state"][-3:], 4)) for s in range(4)}
    finally:
        env.close()
    assert len(goals) == 4


@pytest.mark.parametrize("task", sorted(TASKS))
def test_expert_solves_task_with_distractors_that_never_touch(task):
    env = make_env(task, distractors=DistractorConfig(count=3), max_steps=150)
    try:
        env.reset(seed=11)
        model, data = env.sim.model, env.sim.data
        slots = {model.geom(f"dtp_distractor_{i}").id for i in range(3)}
        copies = {g for g in range(model.ngeom)  # every geom of the grounded variant's lookalike copies
                  if model.body(model.geom_bodyid[g]).name.startswith("dtp_lookalike_")}
        assert copies and env.variant.name == "grounded"
        slots |= copies
        assert all(model.geom_contype[g] == 0 and model.geom_conaffinity[g] == 0 for g in slots)
        terminated = truncated = False
        while not (terminated or truncated):
            _, _, terminated, truncated, info = env.step(env.expert_action())
            contacts = {int(g) for c in data.contact[: data.ncon] for g in (c.geom1, c.geom2)}
            assert not contacts & slots
        assert terminated and info["success"]
    finally:
        env.close()


@pytest.mark.parametrize("task", ["push", "drawer-open", "button-press-topdown"])
def test_distractors_keep_clearance(task):
    cfg = DistractorConfig(count=3)
    env = make_env(task, distractors=cfg)
    try:
        for seed in range(5):
            _, info = env.reset(seed=seed)
            placed = env.distractors
            assert len(placed) == 3
            state = info["state"]
            points = [state[:2], state[-3:-1]]  # hand and goal on the table plane
            if TASKS[task].object_bodies:
                points.append(state[4:6])
            for d in placed:
                xy = np.asarray(d.pos[:2])
                for p in points:
                    assert np.linalg.norm(xy - p) >= 0.10
                for centre, radius in env.keepout_discs():
                    assert np.linalg.norm(xy - centre) - d.radius - radius >= cfg.clearance - 1e-9
            for i, d in enumerate(placed):  # on the table, not stacked on each other
                assert d.pos[2] > 0
                for e in placed[i + 1 :]:
                    assert np.linalg.norm(np.subtract(d.pos[:2], e.pos[:2])) >= d.radius + e.radius
    finally:
        env.close()


def test_ood_split_holds_out_colours_and_shapes():
    train, ood = PALETTES["train"], PALETTES["ood"]
    assert not set(train) & set(ood)
    gaps = [np.linalg.norm(np.subtract(a, b)) for a in train.values() for b in ood.values()]
    assert min(gaps) > 0.2
    assert not set(SHAPES["train"]) & set(SHAPES["ood"])
    env = make_env("reach", distractors=DistractorConfig(count=3, palette="ood"), variant="plain")
    try:
        for seed in range(3):
            env.reset(seed=seed)
            for d in env.distractors:
                assert d.colour in ood and d.shape in SHAPES["ood"]
    finally:
        env.close()


def test_distractor_count_per_reset_and_layout_from_seed(push_env):
    push_env.reset(seed=3, options={"distractor_count": 1})
    assert len(push_env.distractors) == 1
    one = push_env.segmentation()
    push_env.reset(seed=3)
    three = push_env.segmentation()
    assert (three == DISTRACTOR).sum() > (one == DISTRACTOR).sum() > 0
    first = push_env.distractors
    push_env.reset(seed=4)
    assert push_env.distractors != first
    with pytest.raises(ValueError):
        push_env.reset(seed=3, options={"distractor_count": 4})


def test_segmentation_labels(push_env):
    obs, _ = push_env.reset(seed=2)
    seg = push_env.segmentation()
    assert seg.shape == (96, 96) and seg.dtype == np.uint8
    assert {BACKGROUND, TASK_OBJECT, GOAL, GRIPPER, DISTRACTOR, ROBOT} <= set(np.unique(seg).tolist())
    robot = push_env.scene.get("robot")  # the arm as a scene part, last so earlier indices keep
    assert robot.role == "robot" and push_env.scene.objects[-1] is robot and robot.geom_ids
    inst = push_env.instance_segmentation()
    assert ((inst == len(push_env.scene.objects) - 1) == (seg == ROBOT)).all()
    assert push_env.render().tobytes() == obs["image"].tobytes()  # segmentation left the image alone
    puck = obs["image"][seg == TASK_OBJECT].astype(int)  # the recoloured yellow puck
    assert (puck[:, 0] > puck[:, 2] + 60).mean() > 0.8
    env = make_env("button-press-topdown", variant="plain")
    try:
        env.reset(seed=0)
        labels = set(np.unique(env.segmentation()).tolist())
        assert TASK_OBJECT in labels and GOAL not in labels and DISTRACTOR not in labels
    finally:
        env.close()


def test_close_is_idempotent():
    env = make_env("reach")
    env.reset(seed=0)
    env.close()
    env.close()


def test_missing_gl_backend_raises_render_backend_error(monkeypatch):
    from dtp.envs import RenderBackendError
    from dtp.envs import rendering

    def no_context(*args, **kwargs):
        raise RuntimeError("Cannot initialize a EGL device display.")

    monkeypatch.setattr(rendering.mujoco, "Renderer", no_context)
    env = make_env("reach")
    try:
        with pytest.raises(RenderBackendError, match="MUJOCO_GL"):
            env.reset(seed=0)
    finally:
        env.close()
