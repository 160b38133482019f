"""The env of a task name, whichever benchmark family it belongs to, and of an evaluation run.

Meta-World tasks are bare names ("push"); LIBERO tasks are "<suite>/<index>" ("libero_object/3"),
and a bare suite name stands for all of its tasks where a command takes a task list.
"""

from __future__ import annotations

from typing import Any, Iterable

from ..errors import ConfigError
from .libero.names import expand as expand_libero
from .libero.names import is_libero
from .variants import DEFAULT_VARIANT

LIBERO_OPTIONS = ("image_size", "wrist", "max_steps", "instruction", "antialias")  # a LIBERO suite sets its own scene and camera


def make_env(task: str, **kwargs: Any):
    """The gymnasium env of `task`: `MetaWorldEnv` for a Meta-World name, `LiberoEnv` for a LIBERO one."""
    if is_libero(task):
        bad = sorted(set(kwargs) - set(LIBERO_OPTIONS))
        if bad:
            raise ConfigError(f"{task} is a LIBERO task: {', '.join(bad)} apply to Meta-World tasks only "
                              f"(LIBERO takes {', '.join(LIBERO_OPTIONS)})")
        from .libero.env import LiberoEnv

        return LiberoEnv(task, **kwargs)
    from .metaworld_env import make_env as make_metaworld_env

    return make_metaworld_env(task, **kwargs)


def expand_tasks(names: Iterable[str]) -> tuple[str, ...]:
    """Task names with every LIBERO suite replaced by its tasks; checks each name (Meta-World names
    against the task table, LIBERO ones against the installed package)."""
    from .tasks import get_task

    out: list[str] = []
    for name in names:
        if is_libero(name):
            out.extend(expand_libero([name]))
        else:
            get_task(name)
            out.append(name)
    return tuple(dict.fromkeys(out))


def benchmark_env(task: str, *, distractors: int, palette: str, image_size: int, max_steps: int | None = None,
                  variant: str = DEFAULT_VARIANT, lookalikes: int | tuple[int, int] | None = None):
    """The env of task `task` in an evaluation run; max_steps None keeps the env's own limit,
    lookalikes None the split's range. A LIBERO task ignores the distractor, palette and variant
    settings: its suite fixes the scene (`libero_object_with_mug` adds the mug)."""
    if is_libero(task):
        return make_env(task, image_size=image_size, max_steps=max_steps)
    from . import DistractorConfig

    kwargs: dict[str, Any] = {
        "distractors": DistractorConfig(count=distractors, palette=palette, lookalikes=lookalikes),
        "image_size": image_size,
        "variant": variant,
    }
    if max_steps is not None:
        kwargs["max_steps"] = max_steps
    return make_env(task, **kwargs)
