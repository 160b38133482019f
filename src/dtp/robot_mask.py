"""Where the robot's own body is in the image, so that an embodiment-aware G can keep it (issue 27).

No instruction names the arm, so the instruction's important region G leaves it out, while a policy
must look at its arm to act; Eq. 5 then calls the arm's patches distracting. `DTPConfig(keep_robot=...)`
adds the robot's patches to G before Eq. 5, from one of two sources:

- "segmentation": the simulator's labels for the arm and the gripper (an oracle, like region="oracle");
- "motion": a training-free estimate a user has on a real robot with a fixed camera: the patches whose
  pixels changed between consecutive frames within the last few steps (the arm is what moves; an
  object it carries moves with it and is kept too).

This is our extension, not the paper's.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import torch

from . import core
from .errors import InputError

from .choices import ROBOT_MASK_SOURCES  # noqa: F401  (re-exported)
ROBOT_LABELS = (6, 3)  # dtp.regions.SEGMENTATION_LABELS: robot (the arm), gripper

# The motion estimate's settings, chosen on validation scenes by `python -m dtp.experiments.robot_mask`
# (48 settings scored by IoU against the segmentation's arm and gripper patches, on DTP-off rollouts of
# the shipped tinyvla: seed set 1, 4 scenes per task, the five Meta-World tasks, 2,199 steps). The best:
# IoU 0.902, precision 0.948, recall 0.952 (docs/benchmark.md).
MOTION_THRESHOLD = 0.02  # a pixel changed when its mean absolute RGB change exceeds this (0-1 scale)
MOTION_MIN_SHARE = 0.02  # a patch moved when at least this share of its pixels changed
MOTION_WINDOW = 4  # steps a moved patch stays in the estimate


def segmentation_robot_patches(segmentation: np.ndarray, grid: tuple[int, int]) -> torch.Tensor:
    """(h, w) bool: patches holding any pixel of the arm or the gripper."""
    hit = torch.from_numpy(np.isin(np.asarray(segmentation), ROBOT_LABELS))
    return core.pixels_to_patches(hit, grid)


class MotionRobotMask:
    """Per-episode state of the motion estimate: the last frame and the recent change masks."""

    def __init__(self, threshold: float = MOTION_THRESHOLD, min_share: float = MOTION_MIN_SHARE,
                 window: int = MOTION_WINDOW):
        self.threshold, self.min_share, self.window = float(threshold), float(min_share), int(window)
        self.reset()

    def reset(self) -> None:
        self._previous: np.ndarray | None = None
        self._recent: deque[torch.Tensor] = deque(maxlen=self.window)

    def update(self, image: np.ndarray, grid: tuple[int, int]) -> torch.Tensor:
        """Add the frame (H, W, 3) uint8; return (h, w) bool, the patches that moved in the window
        (empty at an episode's first frame: nothing has moved yet)."""
        frame = np.asarray(image, dtype=np.float32) / 255.0
        if frame.ndim != 3 or frame.shape[-1] != 3:
            raise InputError(f"the motion estimate needs an (H, W, 3) image, got shape {frame.shape}")
        if self._previous is not None and self._previous.shape != frame.shape:
            self.reset()  # a new camera size: a new episode for this estimate
        moved = torch.zeros(grid, dtype=torch.bool)
        if self._previous is not None:
            changed = np.abs(frame - self._previous).mean(-1) > self.threshold  # (H, W)
            moved = core.pixels_to_patches(torch.from_numpy(changed), grid, min_share=self.min_share)
        self._previous = frame
        self._recent.append(moved)
        return torch.stack(list(self._recent)).any(0)


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    """Intersection over union of two bool masks (NaN when both are empty)."""
    union = int((a | b).sum())
    return float("nan") if union == 0 else int((a & b).sum()) / union
