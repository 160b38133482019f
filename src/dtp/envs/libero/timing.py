"""Per-step costs of a LIBERO env on this machine: build, reset, a step with the camera, segmentation.

    python -m dtp.envs.libero.timing libero_object/0 --steps 50 --size 128

Prints one JSON object (milliseconds, medians over the steps) so that docs/libero.md can cite it.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def measure(task: str, steps: int, size: int) -> dict[str, float]:
    """Median costs of building, resetting and stepping `task` at `size` pixels, and of its segmentation."""
    from ...seeds import scene_seed
    from ..benchmark import make_env

    t0 = time.perf_counter()
    env = make_env(task, image_size=size)
    build = time.perf_counter() - t0
    try:
        t0 = time.perf_counter()
        env.reset(seed=scene_seed(0, 0))
        reset = time.perf_counter() - t0
        step_s, seg_s = [], []
        for _ in range(steps):
            t0 = time.perf_counter()
            env.step(np.zeros(7))
            step_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            env.segmentation()
            seg_s.append(time.perf_counter() - t0)
    finally:
        env.close()
    return {"task": task, "size": size, "steps": steps, "build_s": round(build, 2),
            "reset_s": round(reset, 2), "step_ms": round(1000 * float(np.median(step_s)), 1),
            "segmentation_ms": round(1000 * float(np.median(seg_s)), 1),
            "load_1min": round(os.getloadavg()[0], 2)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m dtp.envs.libero.timing", description=__doc__.splitlines()[0])
    p.add_argument("task", help="a LIBERO task, e.g. libero_object/0")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--size", type=int, default=128)
    args = p.parse_args(argv)
    print(json.dumps(measure(args.task, args.steps, args.size)))


if __name__ == "__main__":
    main()
