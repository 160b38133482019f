"""One rollout of a policy in an env, with per-step rows and ground-truth scoring of G and D."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from .. import core
from ..errors import ConfigError
from ..policy import DTPPolicy, StepRecord
from ..regions import ORACLE_LABELS, SEGMENTATION_LABELS
from .maps import MapRecorder
from .runner import ENV_FIELDS

# Segmentation labels of dtp.envs: 1 task object, 2 goal, 3 gripper, 4 distractors, 5 lookalikes.
TASK_LABELS = ORACLE_LABELS
OBJECT_LABEL = SEGMENTATION_LABELS["task_object"]
GOAL_LABEL = SEGMENTATION_LABELS["goal"]
DISTRACTOR_LABEL = SEGMENTATION_LABELS["distractor"]
LOOKALIKE_LABEL = SEGMENTATION_LABELS["lookalike"]
ADDED_LABEL = SEGMENTATION_LABELS["added"]  # the object a LIBERO _with_* suite added
DISTRACTOR_LABELS = (DISTRACTOR_LABEL, LOOKALIKE_LABEL, ADDED_LABEL)  # lookalikes and added objects are distractors too
ROBOT_LABEL = SEGMENTATION_LABELS["robot"]
# scene classes a patch is scored by (issue 27: where do G and D lie, the robot's own body included)
PATCH_CLASSES = {"robot": (ROBOT_LABEL,), "gripper": (SEGMENTATION_LABELS["gripper"],), "task": (OBJECT_LABEL, GOAL_LABEL),
                 "distractors": DISTRACTOR_LABELS, "background": (SEGMENTATION_LABELS["background"],)}
# scene groups whose patches a map recording keeps (dtp.eval.maps truth_<group>; `dtp view` outlines them)
TRUTH_GROUPS = {"task": TASK_LABELS, "distractors": (DISTRACTOR_LABEL, ADDED_LABEL), "lookalikes": (LOOKALIKE_LABEL,)}


@dataclass
class EpisodeOutcome:
    success: bool
    length: int
    steps: list[dict[str, Any]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def patch_labels(seg: np.ndarray, grid: tuple[int, int], labels: tuple[int, ...]) -> torch.Tensor:
    """(h, w) bool: patches containing at least one pixel with one of `labels` (core.pixels_to_patches)."""
    return core.pixels_to_patches(torch.from_numpy(np.isin(seg, labels)), grid)


def patch_class_pixels(seg: np.ndarray, grid: tuple[int, int]) -> dict[str, np.ndarray]:
    """Pixels of each PATCH_CLASSES class in each patch: {class: (h, w) int}, with the patch blocks of
    core.pixels_to_patches (exact blocks where the grid divides the image)."""
    h, w = grid
    big_h, big_w = seg.shape
    rows = (np.arange(h) * big_h) // h
    cols = (np.arange(w) * big_w) // w
    out = {}
    for name, labels in PATCH_CLASSES.items():
        hit = np.isin(seg, labels).astype(np.int64)
        out[name] = np.add.reduceat(np.add.reduceat(hit, rows, axis=0), cols, axis=1)
    return out


def class_shares(mask: torch.Tensor, counts: dict[str, np.ndarray], prefix: str, any_pixel: bool) -> dict[str, float]:
    """Share of `mask`'s patches whose most common class is each class (`<prefix>_major_<class>`) and,
    with any_pixel, that hold any pixel of it (`<prefix>_any_<class>`); NaN for an empty mask."""
    m = mask.numpy().astype(bool)
    n = int(m.sum())
    names = list(counts)
    out: dict[str, float] = {}
    if n == 0:
        for c in names:
            out[f"{prefix}_major_{c}"] = float("nan")
            if any_pixel:
                out[f"{prefix}_any_{c}"] = float("nan")
        return out
    stacked = np.stack([counts[c][m] for c in names])  # (classes, n)
    major = stacked.argmax(0)  # ties go to the earlier class: robot, gripper, task, distractors, background
    for i, c in enumerate(names):
        out[f"{prefix}_major_{c}"] = float((major == i).mean())
        if any_pixel:
            out[f"{prefix}_any_{c}"] = float((stacked[i] > 0).mean())
    return out


def named_object_labels(env: Any) -> tuple[int, ...]:
    """Labels of the thing the instruction names: the task object, or the goal where the task has
    no object (reach: "reach the red ball")."""
    task = getattr(getattr(env, "unwrapped", env), "task", None)
    return (GOAL_LABEL,) if task is not None and not task.object_bodies else (OBJECT_LABEL,)


def region_scores(rec: StepRecord, seg: np.ndarray, object_labels: tuple[int, ...] = (OBJECT_LABEL,)) -> dict[str, float]:
    """Share of the task patches (object, goal, gripper) and of the named object's patches that G
    covers, and of the distractor patches that D covers (NaN where none is visible).

    Distractor patches include lookalikes (grounded variant); d_covers_lookalikes counts those alone.
    g_major_<class>, d_major_<class>, d_any_<class>: where G's and D's patches lie (robot, gripper,
    task parts, distractors, background), by each patch's most common class and by any pixel.
    """
    if rec.region is None:
        return {}
    grid = tuple(rec.region.shape)
    task = patch_labels(seg, grid, TASK_LABELS)
    obj = patch_labels(seg, grid, object_labels)
    dis = patch_labels(seg, grid, DISTRACTOR_LABELS)
    look = patch_labels(seg, grid, (LOOKALIKE_LABEL,))
    out = {"gt_task_patches": int(task.sum()), "gt_object_patches": int(obj.sum()),
           "gt_distractor_patches": int(dis.sum()), "gt_lookalike_patches": int(look.sum())}
    out["g_covers_task"] = float((rec.region & task).sum() / task.sum()) if task.any() else float("nan")
    out["g_covers_object"] = float((rec.region & obj).sum() / obj.sum()) if obj.any() else float("nan")
    pruned = rec.distracting if rec.distracting is not None else rec.pruned
    out["d_covers_distractors"] = float((pruned & dis).sum() / dis.sum()) if dis.any() else float("nan")
    out["d_covers_lookalikes"] = float((pruned & look).sum() / look.sum()) if look.any() else float("nan")
    out["d_on_task"] = float((pruned & task).sum()) if pruned is not None else float("nan")
    # the audit's questions: how much action attention lands on distractors, and how much of D is one
    total = float(rec.attention.sum()) if rec.attention is not None else 0.0
    out["a_on_distractors"] = float(rec.attention[dis].sum()) / total if total > 0 else float("nan")
    out["d_precision_distractors"] = (float((pruned & dis).sum() / pruned.sum())
                                      if pruned is not None and pruned.any() else float("nan"))
    counts = patch_class_pixels(seg, grid)
    out.update(class_shares(rec.region, counts, "g", any_pixel=False))
    if pruned is not None:
        out.update(class_shares(pruned, counts, "d", any_pixel=True))
    return out


class EpisodeRun:
    """One rollout advanced a step at a time, so that a runner can step several together (`--batch`):
    `observation()` gives the policy's input, `advance(result)` scores and records it and steps the env
    (`send` then `receive`, so that a runner can start every env's step before waiting for any).

    `episode` is this rollout's own policy state (DTPPolicy.new_episode) for `step_batch`;
    `run_episode` drives one run with `policy.step` instead.
    """

    def __init__(self, policy: DTPPolicy, env: Any, seed: int, *, score_regions: bool = False,
                 on_step: Callable[[int, dict, StepRecord], None] | None = None,
                 recorder: MapRecorder | None = None) -> None:
        obs_field = policy.region_source.obs_field
        if obs_field not in ENV_FIELDS:
            raise ConfigError(
                f"region={policy.config.region!r} reads obs[{obs_field!r}], which the benchmark env does not supply"
            )
        self.env, self.seed, self.score_regions, self.on_step, self.recorder = env, seed, score_regions, on_step, recorder
        self.supply_seg = obs_field == "segmentation" or policy.config.keep_robot == "segmentation"
        self.object_labels = named_object_labels(env)
        self.obs, _ = env.reset(seed=seed)
        self.episode = policy.new_episode(seed)
        self.rows: list[dict[str, Any]] = []
        self.seconds = {"policy_s": 0.0, "env_s": 0.0, "segmentation_s": 0.0}
        self.success, self.length, self.done = False, 0, False
        self._seg: np.ndarray | None = None
        self.pending: dict[str, Any] | None = None  # the row of a step sent (send) and not yet received
        self._stepped: tuple | None = None

    def observation(self) -> dict:
        """The current observation, with the frame's segmentation when the policy reads it."""
        self._seg = None
        if not self.supply_seg:
            return self.obs
        t0 = time.perf_counter()
        self._seg = self.env.segmentation()
        self.seconds["segmentation_s"] += time.perf_counter() - t0
        return {**self.obs, "segmentation": self._seg}

    def advance(self, res: Any, obs: dict) -> bool:
        """Score and record the policy's result on `obs` (what observation() gave), step the env with its
        action; True when the episode has ended."""
        self.send(res, obs)
        return self.receive()

    def send(self, res: Any, obs: dict) -> None:
        """advance's first half: score and record the result, then start the env's step (a subprocess
        env, dtp.envs.subprocess_env, steps while the caller goes on; any other env steps now)."""
        row = res.record.scalars()
        truth, seg = None, self._seg
        if self.score_regions and res.record.region is not None:
            t0 = time.perf_counter()
            seg = self.env.segmentation() if seg is None else seg
            row.update(region_scores(res.record, seg, self.object_labels))
            if self.recorder is not None:
                grid = tuple(res.record.region.shape)
                truth = {g: patch_labels(seg, grid, labels).numpy() for g, labels in TRUTH_GROUPS.items()}
            self.seconds["segmentation_s"] += time.perf_counter() - t0
        if self.recorder is not None:
            self.recorder.add(obs["image"], res.record, truth)
        if self.on_step is not None:
            self.on_step(self.length, obs, res.record)
        row["action"] = [float(x) for x in np.asarray(res.action).reshape(-1)]
        t0 = time.perf_counter()
        if hasattr(self.env, "step_async"):
            self.env.step_async(res.action)
            self._stepped = None
        else:
            self._stepped = self.env.step(res.action)
        self.seconds["env_s"] += time.perf_counter() - t0
        self.pending = row

    def receive(self) -> bool:
        """advance's second half: the env step's result (waiting for a subprocess env); True when the
        episode has ended."""
        row, self.pending = self.pending, None
        t0 = time.perf_counter()
        stepped = self.env.step_wait() if self._stepped is None else self._stepped
        self.seconds["env_s"] += time.perf_counter() - t0
        self.obs, _, terminated, truncated, info = stepped
        self._stepped = None
        self.length += 1
        self.rows.append(row)
        if terminated or truncated:
            self.success, self.done = bool(info.get("success", terminated)), True
        return self.done

    def outcome(self) -> EpisodeOutcome:
        return EpisodeOutcome(success=self.success, length=self.length, steps=self.rows, seconds=dict(self.seconds))


def run_episode(
    policy: DTPPolicy,
    env: Any,
    seed: int,
    *,
    score_regions: bool = False,
    on_step: Callable[[int, dict, StepRecord], None] | None = None,
    recorder: MapRecorder | None = None,
) -> EpisodeOutcome:
    """Reset `env` with `seed`, act until success or truncation; rows are plain dicts.

    recorder: keeps each step's frame and maps (and, where scored, the patches of TRUTH_GROUPS).

    When the policy's region source reads the segmentation (region="oracle"), each observation
    carries the env's segmentation of the same frame; scoring reuses it.
    """
    run = EpisodeRun(policy, env, seed, score_regions=score_regions, on_step=on_step, recorder=recorder)
    policy.reset(seed)
    while True:
        obs = run.observation()
        t0 = time.perf_counter()
        res = policy.step(obs)
        run.seconds["policy_s"] += time.perf_counter() - t0
        if run.advance(res, obs):
            return run.outcome()
