"""Small numeric helpers shared by the lab (per-episode rows) and the analysis (reports)."""

from __future__ import annotations

import math
from typing import Any, Iterable


def nanmean(xs: Iterable[Any]) -> float:
    """Mean of the finite numbers in `xs` (None, NaN, inf and non-numbers skipped); NaN if there are none."""
    vals = [x for x in xs if isinstance(x, (int, float)) and math.isfinite(x)]
    return sum(vals) / len(vals) if vals else float("nan")
