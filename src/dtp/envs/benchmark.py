"""The env of an evaluation run: one task of the benchmark with the run's distractor settings."""

from __future__ import annotations

from typing import Any

from .variants import DEFAULT_VARIANT


def benchmark_env(task: str, *, distractors: int, palette: str, image_size: int, max_steps: int | None = None,
                  variant: str = DEFAULT_VARIANT, lookalikes: int | tuple[int, int] | None = None):
    """The env of task `task` in an evaluation run; max_steps None keeps the env's own limit,
    lookalikes None the split's range."""
    from . import DistractorConfig, make_env

    kwargs: dict[str, Any] = {
        "distractors": DistractorConfig(count=distractors, palette=palette, lookalikes=lookalikes),
        "image_size": image_size,
        "variant": variant,
    }
    if max_steps is not None:
        kwargs["max_steps"] = max_steps
    return make_env(task, **kwargs)
