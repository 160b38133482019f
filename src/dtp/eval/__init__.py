"""Rollouts over tasks x seeds x configs with resumable, append-only results."""

from .episode import EpisodeOutcome, run_episode
from .runner import EvalSpec, Job, config_name, run_eval, run_jobs, sweep_configs
from .store import RunStore

__all__ = ["EpisodeOutcome", "run_episode", "EvalSpec", "Job", "run_eval", "run_jobs", "sweep_configs", "config_name", "RunStore"]
