"""LIBERO tasks behind dtp.envs' interface: names, test and sampled scenes, images, segmentation, suites."""

from __future__ import annotations

import numpy as np
import pytest

from dtp.envs.libero.names import max_steps_for, split_name
from dtp.errors import ConfigError
from dtp.seeds import VALIDATION_SEED, scene_seed


def test_names_parse_without_libero():
    assert split_name("libero_object/3") == ("libero_object", 3)
    assert split_name("libero_object_with_mug") == ("libero_object_with_mug", None)
    for bad in ("libero_object/x", "libero_/1", "push/1"):
        with pytest.raises(ConfigError):
            split_name(bad)
    assert max_steps_for("libero_object") == 280
    assert max_steps_for("libero_object_with_mug") == 280
    assert max_steps_for("libero_10_with_mug") == 520


def test_labels_match_the_oracle_table():
    from dtp.envs.libero.scene_parts import LABELS
    from dtp.regions import SEGMENTATION_LABELS

    assert all(SEGMENTATION_LABELS[k] == v for k, v in LABELS.items())


def test_scene_parts_from_a_goal():
    from dtp.envs.libero.scene_parts import scene_parts

    problem = {
        "objects": {"akita_black_bowl": ["akita_black_bowl_1"], "plate": ["plate_1"], "libero_mug_yellow": ["libero_mug_yellow_1"],
                    "cream_cheese": ["cream_cheese_1"]},
        "fixtures": {"table": ["main_table"], "flat_stove": ["flat_stove_1"]},
        "goal_state": [["on", "akita_black_bowl_1", "plate_1"]],
    }
    parts = scene_parts(problem, "libero_goal_with_mug")
    assert parts.task_objects == ("akita_black_bowl_1",) and parts.goals == ("plate_1",)
    assert parts.added == ("libero_mug_yellow_1",) and parts.distractors == ("cream_cheese_1",)
    # a place on the table is not an object: nothing becomes the goal
    table_goal = {**problem, "goal_state": [["on", "plate_1", "main_table_stove_front_region"]]}
    assert scene_parts(table_goal, "libero_goal").goals == ()
    stove = {**problem, "goal_state": [["turnon", "flat_stove_1"]]}
    assert scene_parts(stove, "libero_goal").task_objects == ("flat_stove_1",)


libero = pytest.importorskip("libero.libero")


@pytest.fixture(scope="module")
def env():
    from dtp.envs import make_env

    e = make_env("libero_object_with_mug/0", image_size=64)
    yield e
    e.close()


def test_make_env_renders_a_frame_with_the_instruction():
    from dtp.envs import make_env

    env = make_env("libero_object/0")
    try:
        obs, info = env.reset(seed=scene_seed(0, 0))
        assert obs["image"].shape == (128, 128, 3) and obs["image"].dtype == np.uint8
        assert obs["image"].std() > 10  # a real frame, not a blank
        assert obs["instruction"] == env.instruction and "basket" in obs["instruction"]
        assert obs["proprio"].shape == (8,) and info["init_state"] == 0
        assert obs["instruction"].startswith("pick the")  # the BDDL's sentence
        assert env.max_steps == 280 and env.action_space.shape == (7,)
        obs, _, terminated, truncated, info = env.step(np.zeros(7))
        assert not terminated and not truncated and info["steps"] == 1
    finally:
        env.close()


def test_test_seeds_take_the_fixed_states_and_other_seeds_sample(env):
    a, info = env.reset(seed=scene_seed(0, 3))
    assert info["init_state"] == 3 and env.scene.split == "test"
    b, _ = env.reset(options={"init_state": 3}, seed=7)
    assert np.array_equal(a["image"], b["image"])
    v1, info = env.reset(seed=scene_seed(VALIDATION_SEED, 0))
    assert info["init_state"] is None and env.scene.split == "sampled"
    v2, _ = env.reset(seed=scene_seed(VALIDATION_SEED, 0))
    v3, _ = env.reset(seed=scene_seed(VALIDATION_SEED, 1))
    assert np.array_equal(v1["image"], v2["image"]) and not np.array_equal(v1["image"], v3["image"])
    with pytest.raises(ConfigError, match="50 test states"):
        env.reset(seed=scene_seed(0, 50))


def test_rendering_without_multisampling_changes_edges_only():
    from dtp.envs import make_env

    smooth = make_env("libero_object/0", image_size=64)
    sharp = make_env("libero_object/0", image_size=64, antialias=False)
    try:
        a, _ = smooth.reset(seed=scene_seed(0, 0))
        b, _ = sharp.reset(seed=scene_seed(0, 0))
        c, _ = sharp.reset(seed=scene_seed(0, 0))
        diff = np.abs(a["image"].astype(int) - b["image"]).mean()
        assert 0 < diff < 8 and np.array_equal(b["image"], c["image"])
        b2, *_ = sharp.step(np.zeros(7))  # stays off across steps (the context is rebuilt once per reset)
        a2, *_ = smooth.step(np.zeros(7))
        assert 0 < np.abs(a2["image"].astype(int) - b2["image"]).mean() < 8
    finally:
        smooth.close()
        sharp.close()


def test_two_envs_in_one_process_each_render_their_own_frames():
    """robosuite makes a GL context current only when it builds it; a batched run holds several envs."""
    from dtp.envs import make_env

    def steps(env, n=2):
        return [env.step(np.zeros(7))[0]["image"] for _ in range(n)]

    first = make_env("libero_object/0", image_size=48)
    try:
        first.reset(seed=scene_seed(0, 0))
        alone = steps(first)
        first.reset(seed=scene_seed(0, 0))  # a hard reset: its new context is current...
        second = make_env("libero_object/5", image_size=48, antialias=False)
        try:
            second.reset(seed=scene_seed(0, 0))  # ...until this one builds its own
            together = steps(first)
            other = steps(second)
        finally:
            second.close()
        assert all(np.array_equal(a, b) for a, b in zip(alone, together))
        assert not np.array_equal(alone[-1], other[-1]) and other[-1].std() > 10
    finally:
        first.close()


@pytest.mark.parametrize("antialias", [True, False])
def test_segmentation_between_steps_leaves_the_images_alone(antialias):
    """Our segmentation renderer has its own GL context; robosuite's camera must keep drawing in its own."""
    from dtp.envs import make_env

    def run(with_segmentation):
        env = make_env("libero_object/0", image_size=48, antialias=antialias)
        try:
            env.reset(seed=scene_seed(0, 0))
            frames = []
            for i in range(6):
                obs, *_ = env.step(np.array([0, 0, 0.5 if i < 3 else -0.5, 0, 0, 0, -1.0]))
                frames.append(obs["image"])
                if with_segmentation:
                    env.segmentation()
            return frames
        finally:
            env.close()

    assert all(np.array_equal(a, b) for a, b in zip(run(False), run(True)))


def test_segmentation_covers_the_scene_parts_and_lines_up_with_the_image(env):
    import mujoco

    obs, _ = env.reset(seed=scene_seed(0, 0))
    seg = env.segmentation()
    assert seg.shape == obs["image"].shape[:2]
    present = set(np.unique(seg).tolist())
    assert {1, 2, 3, 6, 7} <= present  # task object, basket, gripper, arm, the added mug
    roles = {o.role for o in env.scene.objects}
    assert {"task_object", "goal", "added", "distractor", "robot", "gripper"} <= roles
    assert [o.shape for o in env.scene.by_role("added")] == ["libero_mug_yellow"]
    # the label map's orientation is the image's: a colour render through the same path matches it
    r = mujoco.Renderer(env.model, 64, 64)
    option = mujoco.MjvOption()
    option.geomgroup[0] = 0
    r.update_scene(env.data, camera="agentview", scene_option=option)
    rgb = r.render()
    r.close()
    aligned = np.abs(rgb[:, ::-1].astype(int) - obs["image"]).mean()
    mirrored = np.abs(rgb.astype(int) - obs["image"]).mean()
    assert aligned < 10 < mirrored


def test_bad_names_are_clear_errors():
    from dtp.envs import expand_tasks, make_env

    with pytest.raises(ConfigError, match="did you mean 'libero_object'"):
        make_env("libero_objct/0")
    with pytest.raises(ConfigError, match="tasks 0..9"):
        make_env("libero_object/10")
    with pytest.raises(ConfigError, match="one task"):
        make_env("libero_object")
    with pytest.raises(ConfigError, match="instruction must be one of"):
        make_env("libero_object/0", instruction="file")
    with pytest.raises(ConfigError, match="Meta-World tasks only"):
        make_env("libero_object/0", variant="plain")
    assert expand_tasks(["push", "libero_object"]) == ("push", *(f"libero_object/{i}" for i in range(10)))


@pytest.mark.slow
def test_every_complete_suite_builds_and_renders():
    from dtp.envs import make_env
    from dtp.envs.libero.names import available_suites

    suites = available_suites()
    assert {"libero_object", "libero_spatial", "libero_goal", "libero_10", "libero_90",
            "libero_object_with_mug", "libero_object_with_yellow_book"} <= set(suites)
    for suite in suites:
        env = make_env(f"{suite}/0", image_size=32)
        try:
            obs, _ = env.reset(seed=scene_seed(0, 0))
            assert obs["image"].shape == (32, 32, 3) and obs["image"].std() > 5, suite
            assert obs["instruction"], suite
            assert (env.segmentation() == 1).any() or env.scene.task_object is None, suite
        finally:
            env.close()


def test_collect_writes_expert_demonstrations_and_resumes(tmp_path):
    from dtp.envs.demos import load_episode
    from dtp.envs.libero.collect import collect_libero_demos

    out = tmp_path / "demos"
    summary = collect_libero_demos(out, ["libero_object/0"], 1, image_size=32, progress=False)
    assert summary["tasks"]["libero_object/0"]["episodes"] == 1
    (path,) = (out / "libero_object" / "0").glob("ep_*.h5")
    ep = load_episode(path)
    assert ep["images"].shape[1:] == (32, 32, 3) and ep["actions"].shape[1] == 7 and ep["proprio"].shape[1] == 8
    assert ep["seed"] < 1_000_000 and ep["benchmark"] == "libero" and "basket" in ep["instruction"]
    again = collect_libero_demos(out, ["libero_object/0"], 1, image_size=32, progress=False)
    assert again["tasks"]["libero_object/0"] == {"episodes": 1, "new": 0, "existing": 1, "failed": 0}
    with pytest.raises(ConfigError, match="other settings"):
        collect_libero_demos(out, ["libero_object/0"], 1, image_size=64, progress=False)


def tiny_libero_policy(path, image_size: int = 64):
    """A random 7-D TinyVLA that reads LIBERO-Object's instruction words, saved at `path`."""
    import torch

    from dtp.shipped import VARIANT_KEY
    from dtp.tinyvla import TinyVLA, TinyVLAConfig, build_word_tokenizer, save_tokenizer

    torch.manual_seed(0)
    words = "pick the chocolate pudding alphabet soup and place it in basket".split()
    cfg = TinyVLAConfig(image_size=image_size, patch_size=16, num_words=len(words) + 3, hidden_size=32, num_layers=2,
                        num_heads=2, intermediate_size=64, vision_width=16, action_dims=7, proprio_dims=8,
                        extra={VARIANT_KEY: "libero"})  # as dtp train records a LIBERO collection
    TinyVLA(cfg).save_pretrained(path)
    save_tokenizer(build_word_tokenizer(words), path)
    return path


def test_dagger_collection_keeps_the_experts_labels_of_the_policys_states(tmp_path):
    """`dtp collect --policy`: the policy moves the robot, the file holds the expert's labels, a failed
    episode is kept (and trained on), and the settings are the collection's."""
    from dtp.cli import main
    from dtp.envs.demos import load_episode
    from dtp.tinyvla.data import load_episodes

    ck = tiny_libero_policy(tmp_path / "ck")
    out = tmp_path / "dagger"
    args = ["collect", "--tasks", "libero_object/0", "--episodes", "1", "--image-size", "64", "--max-steps", "12",
            "--out", str(out)]
    assert main(args + ["--policy", str(ck), "--beta", "0.25"]) == 0
    (path,) = (out / "libero_object" / "0").glob("ep_*.h5")
    ep = load_episode(path)
    assert ep["labels"] == "expert" and ep["beta"] == 0.25 and not ep["success"] and ep["n_steps"] == 12
    assert len(load_episodes(out, 64)) == 1  # a relabelled failure is training data

    # the first label is the expert's own first action from that reset; the expert alone would then
    # have moved elsewhere than the recorded states (the policy drove most steps)
    from dtp.envs.benchmark import make_env

    env = make_env("libero_object/0", image_size=64, max_steps=12)
    try:
        obs, _ = env.reset(seed=int(ep["seed"]))
        np.testing.assert_allclose(ep["actions"][0], env.expert_action(recover=True), atol=1e-6)
        expert_proprio = [obs["proprio"]]
        for _ in range(11):
            obs, *_ = env.step(env.expert_action(recover=True))
            expert_proprio.append(obs["proprio"])
    finally:
        env.close()
    assert np.abs(np.stack(expert_proprio) - ep["proprio"]).max() > 1e-3
    assert main(args + ["--policy", str(ck), "--beta", "1.5"]) == 2  # a bad beta is a one-line error


@pytest.mark.slow
def test_eval_and_audit_run_on_libero_with_a_7_dim_policy(tmp_path):
    """dtp eval renders at the model's own size; dtp audit pairs a _with_* task with its base suite's twin."""
    import json

    from dtp.cli import main

    ck = tiny_libero_policy(tmp_path / "ck")
    out = tmp_path / "audit"
    assert main(["audit", "--model", str(ck), "--tasks", "libero_object_with_mug/3", "--episodes", "1",
                 "--max-steps", "2", "--tau", "0.5", "--out", str(out)]) == 0
    summary = json.loads((out / "audit.json").read_text())
    (twin,) = summary["twins"].values()
    assert twin.startswith("libero_object/") and "clean" in summary["arms"]
    assert json.loads((out / "cluttered" / "config.json").read_text())["image_size"] == 64


@pytest.mark.slow
def test_demo_of_a_libero_model_runs_libero_tasks(tmp_path, capsys):
    """dtp demo with a model trained on LIBERO runs LIBERO-PRO's mug tasks, not Meta-World's five."""
    import json

    from dtp.cli import main
    from dtp.demo import LIBERO_DEMO_TASKS

    ck = tiny_libero_policy(tmp_path / "ck")
    out = tmp_path / "demo"
    assert main(["demo", "--model", str(ck), "--episodes", "1", "--max-steps", "2", "--out", str(out)]) == 0
    ran = json.loads((out / "run" / "config.json").read_text())
    assert tuple(ran["tasks"]) == LIBERO_DEMO_TASKS and ran["image_size"] == 64
    table = capsys.readouterr().out
    assert all(f"{task}  " in table for task in LIBERO_DEMO_TASKS)  # whole names, aligned columns
