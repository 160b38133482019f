"""A tiny synthetic demonstration folder: the HDF5 layout dtp.envs writes, with random frames."""

from pathlib import Path

import h5py
import numpy as np
import pytest

INSTRUCTIONS = {
    "reach": ["reach the red ball", "go to the red goal"],
    "push": ["push the puck to the goal", "slide the yellow puck onto the green target"],
}


def write_demos(root: Path, image_size: int = 48, episodes: int = 3, steps: int = 6, success: bool = True) -> Path:
    """root/<task>/ep_<seed>.h5 with `episodes` episodes per task of `steps` steps each."""
    rng = np.random.default_rng(0)
    for t, (task, instructions) in enumerate(INSTRUCTIONS.items()):
        (root / task).mkdir(parents=True, exist_ok=True)
        for e in range(episodes):
            seed = 100 * t + e
            with h5py.File(root / task / f"ep_{seed}.h5", "w") as f:
                f["images"] = rng.integers(0, 256, (steps, image_size, image_size, 3), dtype=np.uint8)
                f["proprio"] = rng.normal(size=(steps, 4)).astype(np.float32)
                f["actions"] = rng.uniform(-1, 1, (steps, 4)).astype(np.float32)
                f.attrs.update(task=task, instruction=instructions[e % len(instructions)], seed=seed,
                               success=success, n_steps=steps, distractor_count=0, palette="default",
                               image_size=image_size, camera="dtp_main")
    return root


@pytest.fixture()
def demo_writer():
    """write_demos itself, for tests that need other sizes or failed episodes."""
    return write_demos


@pytest.fixture()
def demo_dir(tmp_path: Path) -> Path:
    return write_demos(tmp_path / "demos")
