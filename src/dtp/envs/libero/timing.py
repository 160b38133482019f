"""Per-step costs of a LIBERO env on this machine: build, reset, a step with the camera, segmentation.

    python -m dtp.envs.libero.timing libero_object/0 --steps 50 --size 128 [--no-antialias]

Prints one JSON object (milliseconds, medians over the steps) so that docs/libero.md can cite it.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def measure(task: str, steps: int, size: int, antialias: bool = True) -> dict[str, float]:
    """Median costs of building, resetting and stepping `task` at `size` pixels, and of its segmentation."""
    from ...seeds import scene_seed
    from ..benchmark import make_env

    t0 = time.perf_counter()
    env = make_env(task, image_size=size, antialias=antialias)
    build = time.perf_counter() - t0
    try:
        t0 = time.perf_counter()
        env.reset(seed=scene_seed(0, 0))
        reset = time.perf_counter() - t0
        step_s, seg_s = [], []
        for i in range(steps):
            action = np.zeros(7)
            action[2] = 0.5 if (i // 10) % 2 == 0 else -0.5  # the arm moves up and down: a static scene renders faster
            action[6] = -1.0
            t0 = time.perf_counter()
            env.step(action)
            step_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            env.segmentation()
            seg_s.append(time.perf_counter() - t0)
    finally:
        env.close()
    return {"task": task, "size": size, "antialias": antialias, "steps": steps, "build_s": round(build, 2),
            "reset_s": round(reset, 2), "step_ms": round(1000 * float(np.median(step_s)), 1),
            "segmentation_ms": round(1000 * float(np.median(seg_s)), 1),
            "load_1min": round(os.getloadavg()[0], 2)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m dtp.envs.libero.timing", description=__doc__.splitlines()[0])
    p.add_argument("task", help="a LIBERO task, e.g. libero_object/0")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--no-antialias", action="store_true", help="render without multisampling (LiberoEnv(antialias=False))")
    args = p.parse_args(argv)
    print(json.dumps(measure(args.task, args.steps, args.size, not args.no_antialias)))


if __name__ == "__main__":
    main()
