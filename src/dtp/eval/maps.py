"""Per-episode recordings of what the policy saw and computed, for `dtp view` (eval's --record-maps).

<run>/maps/<config>__<task>__<seed>.npz, one compressed file per committed episode, T steps:
    frames     (T, H, W, 3) uint8   the camera image each step's pass 1 saw
    captured   (T,) bool            whether the step computed maps (DTP on, or observe on)
    relevance  (T, h, w) float16    r (zeros where not captured)
    attention  (T, h, w) float16    A
    region     (T, h, w) bool       G
    pruned     (T, h, w) bool       D as pruned (the ablation's mask when one ran; empty when DTP is off)
    scored     (T,) bool            whether the step's ground truth was scored (score_regions)
    truth_<g>  (T, h, w) bool       patches showing scene group g (TRUTH_GROUPS in dtp.eval.episode)

Frames deflate to about 3 KB a step at 96 px, so an episode of 150 steps takes about 0.5 MB.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..policy import StepRecord

MAPS_DIR = "maps"
MAP_FIELDS = ("relevance", "attention", "region", "pruned")


def maps_file(run_dir: str | Path, key: str) -> Path:
    """Where episode `key` ('config|task|seed') keeps its maps; '/' in a config name becomes '+'."""
    config, task, seed = key.split("|")
    return Path(run_dir) / MAPS_DIR / f"{config.replace('/', '+')}__{task}__{seed}.npz"


class MapRecorder:
    """Collects one episode's frames and maps, step by step, into the arrays of the module docstring."""

    def __init__(self) -> None:
        self.frames: list[np.ndarray] = []
        self.records: list[StepRecord] = []
        self.truth: list[dict[str, np.ndarray] | None] = []

    def add(self, image: np.ndarray, rec: StepRecord, truth: dict[str, np.ndarray] | None = None) -> None:
        """One step: the image pass 1 saw, its record, and the patch masks of the scene's groups if scored."""
        self.frames.append(np.asarray(image, dtype=np.uint8).copy())
        self.records.append(rec)
        self.truth.append(truth)

    def arrays(self) -> dict[str, np.ndarray]:
        t = len(self.frames)
        out: dict[str, np.ndarray] = {"frames": np.stack(self.frames) if t else np.zeros((0, 0, 0, 3), np.uint8)}
        captured = np.array([r.region is not None for r in self.records], dtype=bool)
        out["captured"] = captured
        grid = next((tuple(r.region.shape) for r in self.records if r.region is not None), (0, 0))
        for name in MAP_FIELDS:
            dtype = np.bool_ if name in ("region", "pruned") else np.float16
            arr = np.zeros((t, *grid), dtype=dtype)
            for i, r in enumerate(self.records):
                m = getattr(r, name)
                if name == "pruned" and not r.n_pruned:
                    continue  # DTP off (observe) computes the rule's D but prunes nothing: keep D as pruned
                if m is not None and tuple(m.shape) == grid:
                    arr[i] = m.numpy().astype(dtype)
            out[name] = arr
        out["scored"] = np.array([tr is not None for tr in self.truth], dtype=bool)
        groups = dict.fromkeys(g for tr in self.truth if tr for g in tr)
        for g in groups:
            arr = np.zeros((t, *grid), dtype=bool)
            for i, tr in enumerate(self.truth):
                if tr and g in tr and tr[g].shape == grid:
                    arr[i] = tr[g]
            out[f"truth_{g}"] = arr
        return out


def save_maps(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write atomically (a kill leaves the old file or none, never half of one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        np.savez_compressed(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def load_maps(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}
