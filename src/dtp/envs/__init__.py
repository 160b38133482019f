"""Simulator benchmark: Meta-World tasks with instructions, distractors and scripted demos."""

from dtp.envs.errors import RenderBackendError, UnknownTaskError
from dtp.envs.tasks import TASKS, TaskSpec, all_instruction_words, get_task

__all__ = ["TASKS", "TaskSpec", "get_task", "RenderBackendError", "UnknownTaskError", "all_instruction_words"]
