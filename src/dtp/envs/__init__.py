"""Simulator benchmark: Meta-World tasks with instructions, distractors and scripted demos."""

from dtp.envs.errors import RenderBackendError, UnknownTaskError
from dtp.envs.tasks import TASKS, TaskSpec, all_instruction_words, get_task
from dtp.envs.variants import DEFAULT_VARIANT, VARIANTS, Variant, get_variant
from dtp.envs.distractors import DistractorConfig, validate_palette
from dtp.envs.scene import Scene, SceneObject
from dtp.envs.metaworld_env import MetaWorldEnv, expert_action, make_env
from dtp.envs.demos import collect_demos, demo_seed, iter_demo_files, load_episode

__all__ = [
    "TASKS",
    "TaskSpec",
    "get_task",
    "make_env",
    "MetaWorldEnv",
    "expert_action",
    "DistractorConfig",
    "validate_palette",
    "DEFAULT_VARIANT",
    "VARIANTS",
    "Variant",
    "get_variant",
    "Scene",
    "SceneObject",
    "RenderBackendError",
    "UnknownTaskError",
    "all_instruction_words",
    "collect_demos",
    "demo_seed",
    "iter_demo_files",
    "load_episode",
]
