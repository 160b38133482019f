"""The embodiment-aware G (DTPConfig.keep_robot): robot masks and their effect on Eq. 5."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dtp import DTPConfig, DTPPolicy
from dtp.errors import ConfigError, InputError
from dtp.robot_mask import MotionRobotMask, iou, segmentation_robot_patches


def test_segmentation_robot_patches_are_the_arm_and_the_gripper():
    seg = np.zeros((8, 8), dtype=np.uint8)  # 2x2 patches of 4x4 pixels
    seg[0, 0] = 6  # arm in patch (0, 0)
    seg[7, 7] = 3  # gripper in patch (1, 1)
    seg[0, 7] = 4  # a distractor in patch (0, 1)
    assert segmentation_robot_patches(seg, (2, 2)).tolist() == [[True, False], [False, True]]


def test_motion_mask_marks_what_moved_within_the_window():
    mask = MotionRobotMask(threshold=0.1, min_share=0.25, window=2)
    frame = np.zeros((8, 8, 3), dtype=np.uint8)
    assert not mask.update(frame, (2, 2)).any()  # the first frame: nothing has moved
    moved = frame.copy()
    moved[0:2, 0:4] = 255  # 8 of patch (0, 0)'s 16 pixels change
    assert mask.update(moved, (2, 2)).tolist() == [[True, False], [False, False]]
    assert mask.update(moved, (2, 2)).tolist() == [[True, False], [False, False]]  # still in the window
    assert not mask.update(moved, (2, 2)).any()  # two still steps later it is gone
    small = moved.copy()
    small[7, 7] = 0  # 1 of 16 pixels: below min_share
    assert not mask.update(small, (2, 2))[1, 1]
    mask.reset()
    assert not mask.update(moved, (2, 2)).any()
    assert iou(torch.tensor([True, False]), torch.tensor([True, True])) == 0.5
    assert np.isnan(iou(torch.tensor([False]), torch.tensor([False])))


def test_keep_robot_puts_the_robot_in_g_and_never_prunes_it(tiny_adapter, tiny_obs):
    seg = np.zeros((48, 48), dtype=np.uint8)
    seg[:, :] = 6  # the whole image is the robot: nothing may be pruned
    plain = DTPPolicy(tiny_adapter, DTPConfig(tau=0.0)).step(tiny_obs).record
    assert plain.n_pruned > 0
    rec = DTPPolicy(tiny_adapter, DTPConfig(tau=0.0, keep_robot="segmentation")).step(
        {**tiny_obs, "segmentation": seg}).record
    assert rec.robot.all() and rec.region.all() and rec.n_pruned == 0 and rec.scalars()["n_robot"] == 36
    seg[:, :] = 0
    seg[0:8, 0:8] = 6  # one robot patch: G grows by it (if it was not in G), D never holds it
    rec = DTPPolicy(tiny_adapter, DTPConfig(tau=0.0, keep_robot="segmentation")).step(
        {**tiny_obs, "segmentation": seg}).record
    assert rec.region[0, 0] and not rec.pruned[0, 0]
    assert torch.equal(rec.region, plain.region | rec.robot)
    with pytest.raises(InputError, match="keep_robot='segmentation' needs"):
        DTPPolicy(tiny_adapter, DTPConfig(keep_robot="segmentation")).step(tiny_obs)


def test_motion_source_runs_per_episode(tiny_adapter, tiny_obs):
    policy = DTPPolicy(tiny_adapter, DTPConfig(tau=0.0, keep_robot="motion"))
    first = policy.step(tiny_obs).record
    assert not first.robot.any()  # nothing moved yet
    moved = dict(tiny_obs, image=255 - tiny_obs["image"])
    assert policy.step(moved).record.robot.all()
    policy.reset(1)
    assert not policy.step(moved).record.robot.any()


def test_keep_robot_is_checked_and_named():
    from dtp.eval.runner import config_name, sweep_configs

    with pytest.raises(ConfigError, match="did you mean 'motion'"):
        DTPConfig(keep_robot="motoin")
    assert config_name(DTPConfig(keep_robot="motion")) == "dtp+robot_motion@tau=1"
    cfgs = sweep_configs([1.0], ablations=("robot_motion", "robot_segmentation"))
    assert cfgs["dtp+robot_segmentation@tau=1"].keep_robot == "segmentation"
    assert DTPConfig.from_dict(DTPConfig(keep_robot="motion").to_dict()).keep_robot == "motion"
