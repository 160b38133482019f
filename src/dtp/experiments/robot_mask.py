"""Choose the motion estimate of the robot (dtp.robot_mask) on validation scenes by its IoU with the
simulator's robot patches (arm and gripper).

    python -m dtp.experiments.robot_mask --out robot_mask.json [--tasks push,reach] [--episodes 4]

Rollouts run the shipped model with DTP off on validation seeds (seed set 1, never the test scenes);
every step keeps the frame and the segmentation's robot patches, and each setting of the estimate
(threshold, min share, window) is scored on the same frames: mean IoU, precision and recall over
steps. Prints a table, best first, and writes JSON.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import torch

from ..robot_mask import MotionRobotMask, iou, segmentation_robot_patches
from ..seeds import VALIDATION_SEED, validation_seeds

THRESHOLDS = (0.02, 0.04, 0.08)
MIN_SHARES = (0.02, 0.05, 0.1, 0.25)
WINDOWS = (1, 4, 8, 16)


def record_rollouts(model: str, tasks: list[str], episodes: int, max_steps: int) -> list[list[tuple[np.ndarray, torch.Tensor]]]:
    """Per episode, (frame, robot patches from segmentation) at each step of a DTP-off rollout."""
    from ..config import DTPConfig
    from ..envs.benchmark import benchmark_env
    from ..models import load
    from ..policy import DTPPolicy

    adapter = load(model)
    policy = DTPPolicy(adapter, DTPConfig(enabled=False))
    grid = None
    out = []
    for task in tasks:
        env = benchmark_env(task, distractors=3, palette="train", image_size=adapter.model.config.image_size,
                            max_steps=max_steps)
        try:
            for seed in validation_seeds(episodes, VALIDATION_SEED):
                obs, _ = env.reset(seed=seed)
                policy.reset(seed)
                frames = []
                while True:
                    res = policy.step(obs)
                    grid = res.record.grid if res.record.grid != (0, 0) else _grid(adapter)
                    frames.append((obs["image"], segmentation_robot_patches(env.segmentation(), grid)))
                    obs, _, terminated, truncated, _ = env.step(res.action)
                    if terminated or truncated:
                        break
                out.append(frames)
        finally:
            env.close()
    return out


def _grid(adapter) -> tuple[int, int]:
    n = adapter.model.config.image_size // adapter.model.config.patch_size
    return (n, n)


def score(episodes: list[list[tuple[np.ndarray, torch.Tensor]]], threshold: float, min_share: float,
          window: int) -> dict[str, float]:
    """Mean IoU, precision and recall of one setting against the segmentation, over all steps."""
    ious, precision, recall = [], [], []
    for frames in episodes:
        mask = MotionRobotMask(threshold, min_share, window)
        for image, truth in frames:
            est = mask.update(image, tuple(truth.shape))
            ious.append(iou(est, truth))
            if est.any():
                precision.append(float((est & truth).sum() / est.sum()))
            if truth.any():
                recall.append(float((est & truth).sum() / truth.sum()))
    return {"threshold": threshold, "min_share": min_share, "window": window,
            "iou": float(np.nanmean(ious)), "precision": float(np.mean(precision)) if precision else float("nan"),
            "recall": float(np.mean(recall)) if recall else float("nan"), "steps": len(ious)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m dtp.experiments.robot_mask", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tinyvla")
    p.add_argument("--tasks", default="reach,push,pick-place,button-press-topdown,drawer-open")
    p.add_argument("--episodes", type=int, default=4, help="validation scenes per task")
    p.add_argument("--max-steps", type=int, default=150)
    p.add_argument("--out", type=Path, required=True, help="JSON file for the table")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    episodes = record_rollouts(args.model, args.tasks.split(","), args.episodes, args.max_steps)
    rows = [score(episodes, t, m, w) for t, m, w in itertools.product(THRESHOLDS, MIN_SHARES, WINDOWS)]
    rows.sort(key=lambda r: -r["iou"])
    args.out.write_text(json.dumps({"model": args.model, "tasks": args.tasks, "episodes_per_task": args.episodes,
                                    "seed_set": VALIDATION_SEED, "rows": rows}, indent=2))
    print("| threshold | min share | window | IoU | precision | recall |")
    print("|---|---|---|---|---|---|")
    for r in rows[:10]:
        print(f"| {r['threshold']} | {r['min_share']} | {r['window']} | {r['iou']:.3f} | {r['precision']:.3f} | "
              f"{r['recall']:.3f} |")


if __name__ == "__main__":
    main()
