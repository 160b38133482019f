"""Do the fast pass-2 modes of dtp.fast pick the same action tokens as the exact pass 2, frame by frame?"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import core
from ..config import DTPConfig
from ..models.common import capture_spec_for
from ..policy import DTPPolicy, StepRecord
from .models import env_frames, random_observation

__all__ = ["agreement"]


def agreement(adapter, cfg: DTPConfig, steps: int, seed: int, instruction: str) -> dict[str, Any]:
    """Do the fast pass-2 modes pick the same action tokens as the exact one, step by step?"""
    from .. import fast

    policy = DTPPolicy(adapter, cfg)
    source = "Meta-World frames (scripted expert rollouts over the task list)"
    try:
        frames = list(env_frames(adapter, steps, seed))
    except Exception as e:  # no simulator or no GL: say so and use random images
        rng = np.random.default_rng(seed)
        frames = [random_observation(adapter, instruction, rng) for _ in range(steps)]
        source = f"random images (simulator unavailable: {type(e).__name__}: {e})"
    same = {"exact_prefix": 0, "approx_image": 0}
    max_dlogit = {"exact_prefix": 0.0, "approx_image": 0.0}
    fired = 0
    for obs in frames:
        inputs = adapter.prepare(obs)
        spec = capture_spec_for(inputs.layout)
        gen1 = adapter.generate(inputs, capture=spec, relevance_layers=policy.relevance_layers)
        rec = StepRecord(step=0)
        policy._analyse(gen1, inputs.layout.grid, rec)
        if rec.n_pruned == 0:
            continue
        fired += 1
        keep = core.keep_mask(rec.pruned)
        outs = {}
        for mode in same:  # each pass 2 consumes its pass 1's cache: run pass 1 again for each
            again = adapter.generate(inputs, capture=spec, relevance_layers=policy.relevance_layers)
            outs[mode] = fast.second_pass(adapter, inputs, again, keep, mode)
        exact = fast.second_pass(adapter, inputs, gen1, keep, "exact")
        for mode, out in outs.items():
            same[mode] += out.action_bins.tolist() == exact.action_bins.tolist()
            max_dlogit[mode] = max(max_dlogit[mode], float((out.action_logits - exact.action_logits).abs().max()))
    return {
        "steps": len(frames),
        "steps_pruned": fired,
        "source": source,
        "tau": cfg.tau,
        **{f"{m}_same_actions": same[m] for m in same},
        **{f"{m}_agreement": (same[m] / fired if fired else None) for m in same},
        **{f"{m}_max_logit_diff": max_dlogit[m] for m in same},
    }
