"""What every protocol serves: one shared model and DTPPolicy, one EpisodeState per client session.

The protocol layers (dtp.serve.openpi, dtp.serve.vlaeval) only translate wire messages into
`Observation`s and replies; all DTP work happens in `Session.step` (`DTPPolicy.step` in the
session's episode) or, batched across sessions, in `ServedPolicy.step_sessions` (`step_batch`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import DTPConfig
from ..errors import InputError
from ..models.base import Observation, VLAAdapter
from ..policy import DTPPolicy, EpisodeState, StepRecord, StepResult

__all__ = ["ServedPolicy", "Session", "diagnostics", "make_observation"]

Reply = tuple[np.ndarray, "dict[str, Any] | None"]  # (action float32 (A,), diagnostics or None)

# The maps a reply carries when diagnostics are asked for: (h, w) patch grids, small.
MAP_FIELDS = ("relevance", "region", "attention", "pruned")


@dataclass
class ServedPolicy:
    """A loaded adapter and the DTP settings every session uses.

    The model is shared, so steps from different sessions run one at a time (`lock`); the
    capture installs and removes its attention hook inside each step, which must not overlap.
    `sessions` holds the open sessions (each one EpisodeState); a closed session is forgotten.
    """

    adapter: VLAAdapter
    config: DTPConfig
    model_name: str = "custom"
    observe: bool = False  # capture during DTP-off steps too, so diagnostics have maps

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.policy = DTPPolicy(self.adapter, self.config, observe=self.observe)  # validates the config now
        self.sessions: set[Session] = set()

    def open_session(self, seed: int = 0) -> "Session":
        session = Session(self, seed)
        self.sessions.add(session)
        return session

    def step_sessions(self, sessions: list["Session"], observations: list[Observation],
                      wants: list[bool]) -> list[Reply]:
        """One `step_batch` over several sessions' observations, each in its own episode (one per session)."""
        with self.lock:
            results = self.policy.step_batch(observations, [s.episode for s in sessions])
        return [reply(r, w) for r, w in zip(results, wants)]

    def metadata(self) -> dict[str, Any]:
        """What a client learns on connect: the model and the DTP settings it is served with."""
        from .. import __version__

        return {
            "server": "dtp",
            "dtp_version": __version__,
            "model": self.model_name,
            "adapter": type(self.adapter).__name__,
            "dtp_config": self.config.to_dict(),
        }


class Session:
    """One client's episode over the shared policy: its EpisodeState (step counter, seed, motion estimate)."""

    def __init__(self, served: ServedPolicy, seed: int = 0):
        self.served = served
        self.episode: EpisodeState
        self.reset(seed)

    def reset(self, seed: int = 0) -> None:
        """A fresh episode, as DTPPolicy.reset: new state, and the adapter's own reset hook (pi0 reseeds its noise)."""
        self.episode = self.served.policy.new_episode(int(seed))
        reset_adapter = getattr(self.served.adapter, "reset", None)
        if reset_adapter is not None:
            reset_adapter(int(seed))

    def step(self, obs: Observation, *, want_diagnostics: bool = False) -> Reply:
        """`DTPPolicy.step` in this session's episode; raises InputError on a bad observation."""
        with self.served.lock:
            policy = self.served.policy
            idle, policy.episode = policy.episode, self.episode
            try:
                result = policy.step(obs)
            finally:
                policy.episode = idle  # the shared policy keeps no client's state alive
        return reply(result, want_diagnostics)

    def close(self) -> None:
        """The client is gone: forget its episode state."""
        self.served.sessions.discard(self)


def reply(result: StepResult, want_diagnostics: bool) -> Reply:
    action = np.asarray(result.action, dtype=np.float32).reshape(-1)
    return action, (diagnostics(result.record) if want_diagnostics else None)


def diagnostics(rec: StepRecord) -> dict[str, Any]:
    """DTP's per-step facts as plain values and small arrays (msgpack-friendly, no tensors)."""
    out: dict[str, Any] = {
        "step": rec.step,
        "fired": bool(rec.fired),
        "n_pruned": int(rec.n_pruned),
        "n_region": int(rec.n_region),
        "margin": float(rec.margin),
        "irrelevant_attention": float(rec.irrelevant_attention),
        "tokens_pass1": [int(t) for t in rec.tokens_pass1],
        "tokens": [int(t) for t in rec.tokens],
    }
    maps: dict[str, np.ndarray] = {}
    for name in MAP_FIELDS:
        t = getattr(rec, name)
        if t is None:
            continue
        a = t.detach().cpu().numpy()
        maps[name] = a.astype(np.uint8) if a.dtype == bool else a.astype(np.float32)  # (h, w)
    out["maps"] = maps
    return out


def make_observation(image: Any, instruction: Any, proprio: Any = None) -> Observation:
    """Check the wire types that the adapters do not (they check shape, dtype and emptiness)."""
    if not isinstance(image, np.ndarray):
        raise InputError(f"the image must be a uint8 array (H, W, 3), got {type(image).__name__}")
    if not isinstance(instruction, str):
        raise InputError(f"the instruction must be a string, got {type(instruction).__name__}")
    if proprio is not None:
        try:
            proprio = np.asarray(proprio, dtype=np.float32).reshape(-1)
        except (TypeError, ValueError) as e:
            raise InputError(f"the state must be a float vector: {e}") from e
    return Observation(image=image, instruction=instruction, proprio=proprio)
