"""Gymnasium env ids for dtp's benchmarks, registered when this module is imported.

    import gymnasium as gym
    env = gym.make("dtp.envs.registration:dtp/push-v0", variant="grounded")   # the module part imports it
    env = gym.make("dtp/libero-v0", task="libero_object/3")                    # once it is imported

Ids: `dtp/<task>-v0` for each Meta-World task (keyword arguments as `dtp.envs.make_env`) and
`dtp/libero-v0` (`task=` a LIBERO task name, the other arguments as `LiberoEnv`). Registration is
Gymnasium's own global registry, filled only by importing this module; the rest of dtp never does.
Segmentation, the scene and the expert stay methods of the env (`env.unwrapped.segmentation()`).
"""

from __future__ import annotations

import gymnasium as gym

from .tasks import TASK_NAMES

NAMESPACE = "dtp"
LIBERO_ID = f"{NAMESPACE}/libero-v0"


def env_id(task: str) -> str:
    return f"{NAMESPACE}/{task}-v0"


def register_envs() -> None:
    """Register every id (again is a no-op)."""
    for task in TASK_NAMES:
        if env_id(task) not in gym.registry:
            gym.register(env_id(task), entry_point="dtp.envs.metaworld_env:MetaWorldEnv", kwargs={"task": task},
                         disable_env_checker=True)
    if LIBERO_ID not in gym.registry:
        gym.register(LIBERO_ID, entry_point="dtp.envs.libero.env:LiberoEnv", disable_env_checker=True)


register_envs()
