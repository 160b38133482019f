"""The policy side of batched DTP (issue 26): checking a batch's inputs, and when it cannot batch.

`DTPPolicy.step_batch(observations, episodes)` runs B observations through one pass 1 and one
pass 2 over the samples that fired. Design: the policy object (adapter, config, region source) is
shared; what `step` carries between calls (step count, episode seed, the motion estimate) lives in
an `EpisodeState`, one per episode, passed beside each observation. A server keeps one per client,
a vectorised rollout one per env. Adapter-level state (pi0's noise generator) is not per episode.

An adapter batches when it says so (`supports_batch = True` and a `generate_batch` method, see
models/base.py); otherwise step_batch runs a per-sample loop, logs why once per reason, and leaves
the reason in `policy.batch_fallback`. With a pass-2 reuse mode of dtp.fast, pass 1 is batched and
each fired sample's pass 2 runs alone from its row of the shared cache.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

from .errors import InputError
from .models.base import Observation

__all__ = ["check_batch", "batch_refusal", "announce_fallback"]

log = logging.getLogger(__name__)
_announced: set[str] = set()


def check_batch(observations: Sequence[Any], episodes: Sequence[Any] | None, default: Any) -> tuple[list[Observation], list]:
    """(observations as Observation, one episode state each); raise InputError on a malformed batch.

    episodes=None stands for [default] (the policy's own episode) and then takes exactly one observation.
    """
    obs = [o if isinstance(o, Observation) else Observation.from_dict(o) for o in observations]
    if episodes is None:
        if len(obs) > 1:
            raise InputError(f"{len(obs)} observations need their episodes: step_batch(obs, episodes=[policy.new_episode(seed), ...])")
        episodes = [default] * len(obs)
    episodes = list(episodes)
    if len(episodes) != len(obs):
        raise InputError(f"step_batch got {len(obs)} observations and {len(episodes)} episode states; give one each")
    if len({id(e) for e in episodes}) != len(episodes):
        raise InputError("an episode state appears twice in one batch; an episode's steps run one after another")
    return obs, episodes


def batch_refusal(adapter: Any) -> str | None:
    """Why this adapter cannot run a batch in one pass (None: it can)."""
    if not getattr(adapter, "supports_batch", False) or not callable(getattr(adapter, "generate_batch", None)):
        return f"{type(adapter).__name__} does not batch (no supports_batch/generate_batch); step_batch loops per sample"
    return None


def announce_fallback(reason: str) -> None:
    """Log a fallback reason the first time it occurs in this process."""
    if reason not in _announced:
        _announced.add(reason)
        log.warning("%s", reason)
