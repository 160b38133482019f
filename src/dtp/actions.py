"""Continuous actions <-> 256-bin action tokens (RT-2 / OpenVLA style), uniform bins over [low, high]."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ActionBinner:
    """Uniform bins over [low, high] per dimension; a bin decodes to its centre."""

    bins: int = 256
    low: float = -1.0
    high: float = 1.0

    def to_bins(self, action: np.ndarray) -> np.ndarray:
        """(..., D) floats -> (..., D) ints in [0, bins)."""
        a = np.clip(np.asarray(action, dtype=np.float64), self.low, self.high)
        scaled = (a - self.low) / (self.high - self.low) * self.bins
        return np.clip(np.floor(scaled), 0, self.bins - 1).astype(np.int64)

    def from_bins(self, bins: np.ndarray) -> np.ndarray:
        """(..., D) ints -> (..., D) float32 bin centres."""
        b = np.asarray(bins, dtype=np.float64)
        if b.size and (b.min() < 0 or b.max() >= self.bins):
            raise ValueError(f"action bins must lie in [0, {self.bins}), got {b.min()}..{b.max()}")
        width = (self.high - self.low) / self.bins
        return (self.low + (b + 0.5) * width).astype(np.float32)
