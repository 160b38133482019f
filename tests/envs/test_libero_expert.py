"""The privileged LIBERO expert solves fixed scenes: an official state (task 0) and a sampled flat-box scene."""

import os

import pytest

pytest.importorskip("libero.libero")


def _roll(task_index, state=None, seed=None, steps=300):
    """Roll the expert on libero_object task ``task_index``: official ``state``, or the sampler's ``seed``."""
    from libero.libero import benchmark, get_libero_path
    from libero.libero.envs import OffScreenRenderEnv

    from dtp.envs.libero.expert import PickPlaceExpert

    suite = benchmark.get_benchmark_dict()["libero_object"]()
    task = suite.get_task(task_index)
    bddl = os.path.join(get_libero_path("bddl_files"), task.problem_folder, task.bddl_file)
    env = OffScreenRenderEnv(bddl_file_name=bddl, camera_heights=64, camera_widths=64,
                             has_offscreen_renderer=False, use_camera_obs=False)
    try:
        if state is None:
            env.seed(seed)
            obs = env.reset()
        else:
            env.seed(0)
            env.reset()
            obs = env.set_init_state(suite.get_task_init_states(task_index)[state])
        expert = PickPlaceExpert(env.env)
        for _ in range(steps):
            obs, _, _, _ = env.step(expert.act(obs))
            if env.env._check_success():
                break
        return expert, bool(env.env._check_success())
    finally:
        env.close()


def test_expert_solves_libero_object_task0_state0():
    expert, ok = _roll(0, state=0)
    assert (expert.obj, expert.target) == ("alphabet_soup_1", "basket_1")
    assert ok


def test_expert_solves_flat_box_beside_a_tall_neighbour():
    """Task 1 (cream cheese, 1.8 cm tall) on sampled scene 1000: the tomato sauce stands 10 cm off the box's
    narrow side, so the hand must grasp off-centre to clear it."""
    expert, ok = _roll(1, seed=1000)
    assert expert.obj == "cream_cheese_1"
    assert ok
