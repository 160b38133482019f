"""Simulator benchmarks: Meta-World tasks with instructions, distractors and scripted demos, and LIBERO.

Names load on first use (PEP 562), so light modules (`dtp.envs.variants`, `dtp.envs.tasks`)
import without MuJoCo and Meta-World, e.g. for the command line's option lists.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TASKS": "dtp.envs.tasks",
    "TaskSpec": "dtp.envs.tasks",
    "get_task": "dtp.envs.tasks",
    "all_instruction_words": "dtp.envs.tasks",
    "DEFAULT_VARIANT": "dtp.envs.variants",
    "VARIANTS": "dtp.envs.variants",
    "Variant": "dtp.envs.variants",
    "get_variant": "dtp.envs.variants",
    "Scene": "dtp.envs.scene",
    "SceneObject": "dtp.envs.scene",
    "RenderBackendError": "dtp.envs.errors",
    "UnknownTaskError": "dtp.envs.errors",
    "DistractorConfig": "dtp.envs.distractors",
    "validate_palette": "dtp.envs.distractors",
    "make_env": "dtp.envs.benchmark",
    "expand_tasks": "dtp.envs.benchmark",
    "LiberoEnv": "dtp.envs.libero.env",
    "MetaWorldEnv": "dtp.envs.metaworld_env",
    "expert_action": "dtp.envs.metaworld_env",
    "collect_demos": "dtp.envs.demos",
    "demo_seed": "dtp.envs.demos",
    "iter_demo_files": "dtp.envs.demos",
    "load_episode": "dtp.envs.demos",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dtp.envs' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
