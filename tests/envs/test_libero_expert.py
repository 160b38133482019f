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


def _carrying_expert(recover: bool):
    """A PickPlaceExpert in its carry phase, without a simulator (only the recovery rule is exercised)."""
    from dtp.envs.libero.expert import PickPlaceExpert

    expert = object.__new__(PickPlaceExpert)
    expert.recover, expert.lost, expert.phase = recover, 0, "carry"
    expert.count, expert.stall, expert.last_z, expert.r_hold = 7, 0, None, object()
    return expert


def test_a_recovering_expert_starts_over_only_after_the_object_stays_out_of_hand():
    import numpy as np

    from dtp.envs.libero.expert import RECOVER_AFTER

    eef, in_hand, dropped = np.array([0.0, 0.0, 0.3]), np.array([0.01, 0.0, 0.25]), np.array([0.2, 0.1, 0.02])
    expert = _carrying_expert(recover=True)
    for _ in range(RECOVER_AFTER):
        expert._recover_if_dropped(eef, dropped)
    assert expert.phase == "carry"  # a brief slip is not a drop
    expert._recover_if_dropped(eef, in_hand)
    assert expert.phase == "carry" and expert.lost == 0
    for _ in range(RECOVER_AFTER + 1):
        expert._recover_if_dropped(eef, dropped)
    assert expert.phase == "above" and expert.r_hold is None and expert.count == 0
    approaching = _carrying_expert(recover=True)
    approaching.phase = "descend"  # before the grasp the object is never "in hand": nothing to recover
    for _ in range(3 * RECOVER_AFTER):
        approaching._recover_if_dropped(eef, dropped)
    assert approaching.phase == "descend"
