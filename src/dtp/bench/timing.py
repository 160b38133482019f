"""Wall-clock timing of the bench variants: interleaved round-robin, so every variant sees the same machine load."""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

__all__ = ["time_interleaved", "iqr", "timing_fields"]


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


def timing_fields(times: dict[str, list[float]]) -> dict[str, Any]:
    """A bench result's timing entries: per variant median, IQR and fastest call in ms, and ratios to "plain"."""
    med = {n: statistics.median(v) for n, v in times.items()}
    fastest = {n: min(v) for n, v in times.items()}
    return {
        **{f"{n}_ms": 1e3 * m for n, m in med.items()},
        **{f"{n}_iqr_ms": 1e3 * iqr(v) for n, v in times.items()},
        **{f"{n}_min_ms": 1e3 * m for n, m in fastest.items()},
        # the same ratios from the fastest call of each: other processes only ever add time
        "ratios_of_min": {n: fastest[n] / fastest["plain"] for n in fastest},
        "timed_rounds": len(times["plain"]),
        **{f"{n}_ratio": med[n] / med["plain"] for n in med if n != "plain"},
    }
