"""Check an evaluation run before anything is written, and pin what its settings resolve to.

A typo (task name, checkpoint path, k, layers, runner) must fail before the run folder and
its config.json exist: otherwise the corrected command is refused as "a different run".
`prepare_run` loads the model, validates every setting against it and one real scene, and
returns the spec with defaults resolved (relevance layers, step limit), so config.json
records what actually ran and a resumed run cannot silently change meaning (e.g. after
`dtp layers --write` stores new default layers in the checkpoint).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..envs.libero.names import is_libero
from ..errors import ConfigError
from ..models.base import declared_image_size  # noqa: F401  (re-exported: the CLI imports it from here)
from .runner import EvalSpec, _load_adapter, _make_env

RUNNERS = ("local", "ray")


def check_runner(runner: str) -> None:
    """The runner exists and, for Ray, is installed."""
    if runner not in RUNNERS:
        raise ConfigError(f"unknown runner {runner!r}; choose one of {', '.join(RUNNERS)}")
    if runner == "ray" and importlib.util.find_spec("ray") is None:
        raise ConfigError('--runner ray needs Ray, which is not installed: pip install -e ".[ray]"')


def check_writable_dir(path: str | Path, what: str = "output folder") -> Path:
    """`path` is (or can be created as) a folder we may write into; nothing is created here."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{what} {p} is a file, not a folder; name a folder")
    probe = p
    while not probe.exists():  # nearest existing ancestor: where mkdir would start
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ConfigError(f"{what} {p} cannot be created: {probe} is a file")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {p} is not writable ({probe} is read-only)")
    return p


def check_tasks(tasks: tuple[str, ...]) -> tuple[str, ...]:
    """The run's tasks with LIBERO suites expanded to their tasks, each checked."""
    from ..envs.benchmark import expand_tasks

    try:
        return expand_tasks(tasks)
    except ValueError as e:  # UnknownTaskError lists the known names
        raise ConfigError(str(e)) from None


def prepare_run(spec: EvalSpec, adapter: Any = None) -> tuple[EvalSpec, Any]:
    """Validate `spec` against its model and a real scene; return (resolved spec, loaded adapter).

    Resolved: each config's relevance layers (the model's stored default or the middle third
    when None), the step limit (the env's own when None) and the image size (the model's own
    where its config fixes one). Raises ConfigError (or
    CheckpointError from loading) naming the bad setting; writes nothing.
    """
    from .. import core
    from ..models.base import Observation

    spec = replace(spec, tasks=check_tasks(spec.tasks))  # LIBERO suites become their tasks
    if spec.distractors < 0:
        raise ConfigError(f"distractors must be >= 0, got {spec.distractors}")
    if spec.max_steps is not None and spec.max_steps < 1:
        raise ConfigError(f"max-steps must be >= 1, got {spec.max_steps}")
    adapter = adapter if adapter is not None else _load_adapter(spec.model)
    declared = declared_image_size(adapter)
    if declared is not None and declared != spec.image_size:
        spec = replace(spec, image_size=declared)  # render at the size the model takes (a 128 px LIBERO policy)
    env = _make_env(spec, spec.tasks[0])
    try:
        obs, _ = env.reset(seed=spec.seeds()[0])
        # LIBERO's limit is per suite: a run over several suites keeps each env's own
        max_steps = spec.max_steps if is_libero(spec.tasks[0]) else int(env.max_steps)
    finally:
        env.close()
    n_tokens = adapter.prepare(Observation.from_dict(obs)).layout.num_image_tokens
    default_layers = getattr(adapter, "default_relevance_layers", None)
    configs = {}
    for name, cfg in spec.configs.items():
        core.resolve_k(cfg.k, n_tokens)  # a count larger than the image fails here, not mid-run
        layers = cfg.resolve_layers(adapter.num_layers, default_layers)
        configs[name] = cfg.replace(relevance_layers=layers)
    return replace(spec, configs=configs, max_steps=max_steps), adapter
