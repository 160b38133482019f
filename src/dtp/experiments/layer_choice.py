"""Choose a model's relevance layers on validation scenes by how well G covers the task objects.

The paper leaves the layers open. We pick, for a given model, the candidate layer set whose
important region G (from prompt->image attention at those layers) covers the most patches of
the task object, goal and gripper, measured with the simulator's segmentation on a validation
seed set, never on the test seeds whose success we report. Rollouts run with DTP off.
Beside it, each candidate's coverage of the parts the instruction names (task object and goal,
no gripper) is reported as `named_coverage`; the choice stays by the task region.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from .. import core
from ..config import RELEVANCE_MODES, DTPConfig
from ..errors import ConfigError
from ..eval.episode import GOAL_LABEL, OBJECT_LABEL, TASK_LABELS, patch_labels
from ..models.base import Observation
from ..models.common import capture_spec_for
from ..seeds import VALIDATION_SEED, validation_seeds

NAMED_LABELS = (OBJECT_LABEL, GOAL_LABEL)  # the parts an instruction names


def layer_candidates(num_layers: int) -> dict[str, tuple[int, ...]]:
    """Each single layer, each pair of adjacent layers, the middle third (the default) and all layers."""
    if num_layers < 1:
        raise ConfigError(f"num_layers must be >= 1, got {num_layers}")
    out: dict[str, tuple[int, ...]] = {}
    for l in range(num_layers):
        out[f"{l}"] = (l,)
    for l in range(num_layers - 1):
        out[f"{l},{l + 1}"] = (l, l + 1)
    mid = DTPConfig().resolve_layers(num_layers)
    out.setdefault(",".join(map(str, mid)), mid)
    out.setdefault(",".join(map(str, range(num_layers))), tuple(range(num_layers)))
    return out


def coverage_by_layers(
    prompt_rows: torch.Tensor,  # (L, H, P, N) prompt->image rows at every layer
    grid: tuple[int, int],
    task_patches: torch.Tensor,  # (h, w) bool
    candidates: dict[str, tuple[int, ...]],
    k: float | int,
    sigma: float,
    prompt_hidden: torch.Tensor | None = None,
    image_hidden: torch.Tensor | None = None,
) -> dict[str, float]:
    """Share of task patches inside G for each candidate layer set (NaN when no task patch is visible).

    With prompt_hidden (L, P, D) and image_hidden (L, N, D) given, relevance is the similarity
    mode's cosine instead of attention.
    """
    total = int(task_patches.sum())
    out = {}
    for name, layers in candidates.items():
        if total == 0:
            out[name] = float("nan")
            continue
        idx = list(layers)
        if prompt_hidden is not None:
            r = core.relevance_from_similarity(prompt_hidden[idx], image_hidden[idx], grid)
        else:
            r = core.relevance_from_attention(prompt_rows[idx], grid)
        g = core.important_region(r, k, sigma)
        out[name] = float((g & task_patches).sum()) / total
    return out


@dataclass
class LayerChoice:
    """Mean G coverage per candidate (over all scored steps), per task, and the winner."""

    best: tuple[int, ...]
    coverage: dict[str, float]
    per_task: dict[str, dict[str, float]]
    candidates: dict[str, tuple[int, ...]]
    steps: int
    chance: float  # coverage a random G of the same size would have: k / N
    details: dict[str, Any] = field(default_factory=dict)
    named_coverage: dict[str, float] = field(default_factory=dict)  # the same over task object and goal only

    def to_dict(self) -> dict[str, Any]:
        return {
            "best": list(self.best),
            "coverage": self.coverage,
            "per_task": self.per_task,
            "candidates": {k: list(v) for k, v in self.candidates.items()},
            "steps": self.steps,
            "chance": self.chance,
            "named_coverage": self.named_coverage,
            **self.details,
        }


def _check_arguments(tasks: list[str], episodes: int, k: float | int, sigma: float, relevance: str) -> None:
    """Refuse what would make the choice meaningless (no tasks, no episodes, a region that uses no layers)."""
    DTPConfig(k=k, sigma=sigma, relevance=relevance)  # the same checks as any DTP run (ConfigError)
    if relevance not in RELEVANCE_MODES:
        raise ConfigError(f"layers are chosen for a relevance map {RELEVANCE_MODES}; region {relevance!r} uses no layers")
    if episodes < 1:
        raise ConfigError(f"episodes must be >= 1, got {episodes}")
    if not tasks:
        raise ConfigError("name at least one task")


def _step_coverage(trace, seg: np.ndarray, grid: tuple[int, int], labels, candidates: dict[str, tuple[int, ...]],
                   k: float | int, sigma: float, similarity: bool) -> dict[str, float] | None:
    """One step's coverage of the patches showing `labels` per candidate; None where none is visible."""
    patches = patch_labels(seg, grid, labels)
    if not patches.any():
        return None
    return coverage_by_layers(
        trace.prompt_rows, grid, patches, candidates, k, sigma,
        prompt_hidden=trace.prompt_hidden if similarity else None,
        image_hidden=trace.image_hidden if similarity else None,
    )


def _per_task_means(sums: dict[str, dict[str, float]], counts: dict[str, int],
                    candidates: dict[str, tuple[int, ...]]) -> dict[str, dict[str, float]]:
    """Mean coverage per task and candidate over the steps that scored it (NaN for a task with none)."""
    return {t: {c: sums[t][c] / counts[t] if counts[t] else float("nan") for c in candidates} for t in sums}


def choose_layers(
    adapter,
    make_env: Callable[[str], Any],
    tasks: list[str],
    *,
    episodes: int = 2,
    seed: int = VALIDATION_SEED,
    k: float | int = DTPConfig.k,
    sigma: float = DTPConfig.sigma,
    relevance: str = "attention",
    progress: bool = True,
) -> LayerChoice:
    """Roll the model out with DTP off on validation scenes (each episode ends when the env ends it);
    score every candidate at every step.

    relevance: the mode whose layers are chosen ("attention" or "similarity").
    """
    _check_arguments(tasks, episodes, k, sigma, relevance)
    similarity = relevance == "similarity"
    from tqdm.auto import tqdm

    candidates = layer_candidates(adapter.num_layers)
    all_layers = tuple(range(adapter.num_layers))
    sums = {t: {c: 0.0 for c in candidates} for t in tasks}
    counts = {t: 0 for t in tasks}
    named_sums = {t: {c: 0.0 for c in candidates} for t in tasks}
    named_counts = {t: 0 for t in tasks}
    n_image = None
    bar = tqdm(total=len(tasks) * episodes, desc="layer coverage", disable=not progress, dynamic_ncols=True)
    for task in tasks:
        env = make_env(task)
        try:
            for s in validation_seeds(episodes, seed):
                obs, _ = env.reset(seed=s)
                while True:
                    inputs = adapter.prepare(Observation.from_dict(obs) if isinstance(obs, dict) else obs)
                    gen = adapter.generate(
                        inputs, capture=capture_spec_for(inputs.layout), relevance_layers=all_layers,
                        hidden_states=similarity,
                    )
                    grid = inputs.layout.grid
                    n_image = grid[0] * grid[1]
                    seg = env.segmentation()
                    for labels, total, count in ((TASK_LABELS, sums, counts), (NAMED_LABELS, named_sums, named_counts)):
                        cov = _step_coverage(gen.trace, seg, grid, labels, candidates, k, sigma, similarity)
                        if cov is None:
                            continue
                        for c, v in cov.items():
                            total[task][c] += v
                        count[task] += 1
                    obs, _, terminated, truncated, _ = env.step(adapter.decode(gen.action_bins))
                    if terminated or truncated:
                        break
                bar.update(1)
        finally:
            env.close()
    bar.close()
    per_task = _per_task_means(sums, counts, candidates)
    # every task weighs the same, however long its episodes ran
    coverage = {c: float(np.nanmean([per_task[t][c] for t in tasks])) for c in candidates}
    named_per_task = _per_task_means(named_sums, named_counts, candidates)
    named = {c: float(np.nanmean([named_per_task[t][c] for t in tasks])) for c in candidates}
    best_name = max(candidates, key=lambda c: (-math.inf if math.isnan(coverage[c]) else coverage[c], -len(candidates[c])))
    n_image = n_image or 1
    return LayerChoice(
        best=candidates[best_name],
        coverage=coverage,
        per_task=per_task,
        candidates=candidates,
        steps=sum(counts.values()),
        chance=core.resolve_k(k, n_image) / n_image,
        details={"relevance": relevance, "episodes": episodes, "seed": seed, "k": k, "sigma": sigma},
        named_coverage=named,
    )


def format_layer_choice(choice: LayerChoice, tasks: list[str]) -> str:
    """The table `dtp layers` prints: G's coverage of the task parts per candidate layer set and task."""
    lines = [f"share of task-object patches inside G ({choice.details['relevance']} relevance, k={choice.details['k']}, "
             f"chance {choice.chance:.2f}), {choice.steps} steps, seed set {choice.details['seed']}",
             "layers      " + " ".join(f"{t[:12]:>12}" for t in tasks) + "      mean"]
    for name in choice.candidates:
        row = " ".join(f"{choice.per_task[t][name]:12.3f}" for t in tasks)
        mark = "  <- best" if choice.candidates[name] == choice.best else ""
        lines.append(f"{name:<11} {row} {choice.coverage[name]:9.3f}{mark}")
    lines.append("share of the named parts (task object and goal, no gripper) inside G: "
                 + ", ".join(f"{name} {v:.3f}" for name, v in choice.named_coverage.items()))
    return "\n".join(lines)
