"""Wall-clock timing of the bench variants: interleaved round-robin, so every variant sees the same machine load."""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

__all__ = ["time_interleaved", "iqr"]


def time_interleaved(
    fns: dict[str, Callable[[], Any]],
    repeats: int,
    warmup: int,
    min_seconds: float = 0.0,
    sync: Callable[[], None] | None = None,
) -> dict[str, list[float]]:
    """Seconds per call of each fn, run round-robin (order rotated each round) after `warmup` rounds;
    at least `repeats` timed rounds, more until the slowest fn has `min_seconds` of timed calls.
    sync: called before each clock reading (torch.cuda.synchronize on a GPU, whose kernels run asynchronously)."""
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    sync = sync or (lambda: None)
    r = 0
    while r < warmup + repeats or max(sum(v) for v in times.values()) < min_seconds:
        order = names[r % len(names):] + names[: r % len(names)]
        for n in order:
            sync()
            t0 = time.perf_counter()
            fns[n]()
            sync()
            dt = time.perf_counter() - t0
            if r >= warmup:
                times[n].append(dt)
        r += 1
    return times


def iqr(v: list[float]) -> float:
    if len(v) < 2:
        return 0.0
    q = statistics.quantiles(v, n=4)
    return q[2] - q[0]
