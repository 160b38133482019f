"""Does G follow the colour words? Swap the named object's colour for a lookalike's and look at G.

On validation scenes of the grounded variant (seed set 1 by default, never the test set 0),
each reset that shows a lookalike of a named part gives one frame (the first): G for the
scene's instruction, and G for the same instruction with that part's colour word replaced by
the lookalike's (same shape, so only the colour word changes). Only pass 1 runs (DTP off,
observe on). Each frame is scored by `dtp.analysis.grounding_shift.region_moved`; the result
is the share of scored frames where G moved, with a 95% Wilson interval.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from .. import core
from ..analysis.grounding_shift import region_moved
from ..analysis.stats import wilson_interval
from ..config import DTPConfig
from ..envs.grounding import SWAP_ROLES, swap_colour_word
from ..errors import ConfigError
from ..models.base import Observation
from ..policy import DTPPolicy
from ..seeds import VALIDATION_SEED, validation_seeds

# the named part whose colour is swapped, in order of preference: the object to move, else the goal
def swap_target(scene) -> tuple[Any, Any] | None:
    """(named part, its first lookalike) for the first role of SWAP_ROLES that has a lookalike; None if none."""
    for role in SWAP_ROLES:
        part = next(iter(scene.by_role(role)), None)
        copies = [o for o in scene.lookalikes if o.mimics == role]
        if part is not None and part.colour and copies:
            return part, copies[0]
    return None


@dataclass
class SwapFrame:
    """One scored frame: scene, the two instructions, both G's and the masks (for figures)."""

    task: str
    seed: int
    instruction: str
    swapped: str
    image: np.ndarray
    g_original: torch.Tensor
    g_swapped: torch.Tensor
    named: torch.Tensor
    lookalike: torch.Tensor
    score: Any

    def row(self) -> dict[str, Any]:
        return {"task": self.task, "seed": self.seed, "instruction": self.instruction, "swapped": self.swapped,
                "moved": self.score.moved, **{k: v for k, v in dataclasses.asdict(self.score).items() if k != "moved"}}


@dataclass
class SwapResult:
    frames: list[SwapFrame]
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> scenes
    details: dict[str, Any] = field(default_factory=dict)

    def sample(self, n: int) -> list[SwapFrame]:
        """Up to n frames taking each task's first frame in turn (for a figure that shows every task)."""
        seen: dict[str, int] = {}
        ranks = []
        for f in self.frames:
            ranks.append(seen.get(f.task, 0))
            seen[f.task] = ranks[-1] + 1
        order = sorted(range(len(self.frames)), key=lambda i: (ranks[i], i))
        return [self.frames[i] for i in order[:n]]

    def summary(self) -> dict[str, Any]:
        def rate(fr: list[SwapFrame]) -> dict[str, Any]:
            scored = [f for f in fr if f.score.moved is not None]
            k = sum(bool(f.score.moved) for f in scored)
            lo, hi = wilson_interval(k, len(scored))
            means = {n: float(np.mean([getattr(f.score, n) for f in scored])) if scored else float("nan")
                     for n in ("named_original", "lookalike_original", "named_swapped", "lookalike_swapped")}
            return {"moved": k, "frames": len(scored), "share": k / len(scored) if scored else float("nan"),
                    "ci95": [lo, hi], "unchanged_g": sum(torch.equal(f.g_original, f.g_swapped) for f in scored),
                    "mean_share": means}

        tasks = sorted({f.task for f in self.frames}, key=[f.task for f in self.frames].index)
        return {**rate(self.frames), "per_task": {t: rate([f for f in self.frames if f.task == t]) for t in tasks},
                "skipped": self.skipped, **self.details}


def colour_swap(
    adapter,
    make_env: Callable[[str], Any],
    tasks: list[str],
    *,
    episodes: int = 10,
    seed: int = VALIDATION_SEED,
    config: DTPConfig | None = None,
) -> SwapResult:
    """Score the first frame of `episodes` validation scenes per task (see the module docstring)."""
    if episodes < 1:
        raise ConfigError(f"episodes must be >= 1, got {episodes}")
    if not tasks:
        raise ConfigError("name at least one task")
    cfg = dataclasses.replace(config or DTPConfig(), enabled=False)
    policy = DTPPolicy(adapter, cfg, observe=True)
    frames: list[SwapFrame] = []
    skipped: dict[str, int] = {}
    for task in tasks:
        env = make_env(task)
        try:
            for s in validation_seeds(episodes, seed):
                obs, _ = env.reset(seed=s)
                scene = env.scene
                target = swap_target(scene)
                if target is None:
                    skipped["no lookalike"] = skipped.get("no lookalike", 0) + 1
                    continue
                part, copy = target
                o = Observation.from_dict(obs) if isinstance(obs, dict) else obs
                swapped = swap_colour_word(o.instruction, part.colour, copy.colour)
                regions = []
                for text in (o.instruction, swapped):
                    policy.reset(s)
                    regions.append(policy.step(dataclasses.replace(o, instruction=text)).record.region)
                grid = tuple(regions[0].shape)
                inst = torch.from_numpy(env.instance_segmentation().astype(np.int64))
                index = {ob.name: i for i, ob in enumerate(scene.objects)}
                named = core.pixels_to_patches(inst == index[part.name], grid)
                look = core.pixels_to_patches(inst == index[copy.name], grid)
                score = region_moved(regions[0], regions[1], named, look)
                if score.moved is None:
                    skipped["not visible"] = skipped.get("not visible", 0) + 1
                frames.append(SwapFrame(task, s, o.instruction, swapped, o.image, regions[0], regions[1],
                                        named, look, score))
        finally:
            env.close()
    return SwapResult(frames, skipped, {"episodes": episodes, "seed": seed, "k": cfg.k, "sigma": cfg.sigma})


def format_swap_summary(summary: dict[str, Any]) -> str:
    """The lines `dtp swap` prints from `SwapResult.summary()`: how often G moved, overall and per task."""
    lines = [f"G moved onto the lookalike when its colour word was named: {summary['moved']}/{summary['frames']} "
             f"frames, 95% CI {summary['ci95'][0]:.2f}-{summary['ci95'][1]:.2f} (seed set {summary['seed']})"]
    lines += [f"  {t:<12} {r['moved']}/{r['frames']}" for t, r in summary["per_task"].items()]
    return "\n".join(lines)
