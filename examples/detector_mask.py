"""DTP with the important region G from your own detector (region="mask"), on the shipped model and the
benchmark: a colour threshold stands in for the detector."""

import numpy as np

from dtp import DTPConfig, DTPPolicy
from dtp.envs import make_env
from dtp.models import load


def detect(image: np.ndarray, rgb: tuple[float, float, float]) -> np.ndarray:
    """Stand-in for your detector: a bool (H, W) mask of the pixels within 60 of a colour (0-255 scale)."""
    return np.abs(image.astype(int) - np.array(rgb) * 255).max(axis=-1) < 60


env = make_env("push")  # the grounded variant: the instruction names the puck's colour
policy = DTPPolicy(load("tinyvla"), DTPConfig(region="mask", tau=1.0))
obs, _ = env.reset(seed=1_010_001)  # a validation scene (seed set 1)
policy.reset(seed=1_010_001)
puck = env.unwrapped.scene.task_object
print(f'"{obs["instruction"]}": detecting the {puck.colour} puck')
for _ in range(5):
    mask = detect(obs["image"], puck.rgb)
    on_puck = int((env.unwrapped.segmentation()[mask] == 1).sum())  # 1: the task object (ground truth)
    res = policy.step({**obs, "region_mask": mask})
    rec = res.record
    print(f"step {rec.step}: detector {int(mask.sum())} px ({on_puck} on the puck), G {rec.n_region} patches, "
          f"pruned {rec.n_pruned}")
    obs, _, terminated, truncated, _ = env.step(res.action)
env.close()
