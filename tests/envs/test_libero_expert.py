"""The privileged LIBERO expert solves a fixed task and initial state (libero_object task 0, state 0)."""

import os

import pytest

pytest.importorskip("libero.libero")


def test_expert_solves_libero_object_task0_state0():
    from libero.libero import benchmark, get_libero_path
    from libero.libero.envs import OffScreenRenderEnv

    from dtp.envs.libero.expert import PickPlaceExpert

    suite = benchmark.get_benchmark_dict()["libero_object"]()
    task = suite.get_task(0)
    bddl = os.path.join(get_libero_path("bddl_files"), task.problem_folder, task.bddl_file)
    env = OffScreenRenderEnv(bddl_file_name=bddl, camera_heights=64, camera_widths=64,
                             has_offscreen_renderer=False, use_camera_obs=False)
    try:
        env.seed(0)
        env.reset()
        obs = env.set_init_state(suite.get_task_init_states(0)[0])
        expert = PickPlaceExpert(env.env)
        assert (expert.obj, expert.target) == ("alphabet_soup_1", "basket_1")
        for _ in range(300):
            obs, _, _, _ = env.step(expert.act(obs))
            if env.env._check_success():
                break
        assert env.env._check_success()
    finally:
        env.close()
