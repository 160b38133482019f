"""Segmentation labels of the Meta-World scene: which geom and site is which scene part.

The label numbers are `dtp.regions.SEGMENTATION_LABELS` (a test checks); the gripper is the hand's
subtree, the robot the rest of the Sawyer under its root body.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dtp.envs.distractors import slot_geom_ids

BACKGROUND, TASK_OBJECT, GOAL, GRIPPER, DISTRACTOR, LOOKALIKE, ROBOT = 0, 1, 2, 3, 4, 5, 6
ROBOT_ROOT = "base"  # the Sawyer's root body: pedestal, torso, head and arm; the hand's subtree is the gripper
HAND_ROOT = "right_hand"


def subtree_mask(model: Any, roots: list[int]) -> np.ndarray:
    """Bool per body: is it one of `roots` or below one of them."""
    inside = np.zeros(model.nbody, dtype=bool)
    inside[roots] = True
    for b in range(1, model.nbody):  # parents precede children in MuJoCo's body order
        inside[b] |= inside[model.body_parentid[b]]
    return inside


def robot_body_mask(model: Any) -> np.ndarray:
    """Bool per body: the robot's own body, the hand excluded."""
    return subtree_mask(model, [model.body(ROBOT_ROOT).id]) & ~subtree_mask(model, [model.body(HAND_ROOT).id])


def label_tables(model: Any, task: Any, distractor_slots: int, grounding_ids: Any) -> tuple[np.ndarray, np.ndarray]:
    """Segmentation label per geom id and per site id of `model` for `task` (a TaskSpec)."""
    geom_labels = np.zeros(model.ngeom, dtype=np.uint8)
    site_labels = np.zeros(model.nsite, dtype=np.uint8)
    hand = subtree_mask(model, [model.body(HAND_ROOT).id])
    robot = robot_body_mask(model)
    geom_labels[robot[model.geom_bodyid]] = ROBOT
    site_labels[robot[model.site_bodyid]] = ROBOT
    geom_labels[hand[model.geom_bodyid]] = GRIPPER
    site_labels[hand[model.site_bodyid]] = GRIPPER
    if task.object_bodies:
        obj = subtree_mask(model, [model.body(b).id for b in task.object_bodies])
        geom_labels[obj[model.geom_bodyid]] = TASK_OBJECT
        site_labels[obj[model.site_bodyid]] = TASK_OBJECT
    if task.goal_site is not None:
        site_labels[model.site(task.goal_site).id] = GOAL
    geom_labels[slot_geom_ids(model, distractor_slots)] = DISTRACTOR
    if grounding_ids is not None:
        for slots in grounding_ids.slots.values():
            for part in slots:
                geom_labels[part.geoms] = LOOKALIKE
                site_labels[part.sites] = LOOKALIKE
    return geom_labels, site_labels
