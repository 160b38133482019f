"""Gymnasium ids: gym.make builds dtp's envs by id, with the same scenes as make_env."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from dtp.envs import make_env


def test_make_by_id_gives_the_same_scene_as_make_env():
    env = gym.make("dtp.envs.registration:dtp/push-v0", variant="plain")
    ref = make_env("push", variant="plain")
    try:
        a, _ = env.reset(seed=5)
        b, _ = ref.reset(seed=5)
        assert np.array_equal(a["image"], b["image"]) and a["instruction"] == b["instruction"]
        assert env.unwrapped.segmentation().shape == a["image"].shape[:2]
    finally:
        env.close()
        ref.close()


def test_every_task_has_an_id():
    import dtp.envs.registration as reg
    from dtp.envs.tasks import TASK_NAMES

    assert all(reg.env_id(t) in gym.registry for t in TASK_NAMES) and reg.LIBERO_ID in gym.registry
    reg.register_envs()  # again: no error, nothing doubled


def test_libero_by_id():
    pytest.importorskip("libero.libero")
    import dtp.envs.registration  # noqa: F401

    env = gym.make("dtp/libero-v0", task="libero_object/0", image_size=32)
    try:
        obs, info = env.reset(seed=1_000_000)
        assert obs["image"].shape == (32, 32, 3) and info["init_state"] == 0
    finally:
        env.close()
