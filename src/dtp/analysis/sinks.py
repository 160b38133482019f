"""Attention sinks: does one fixed image patch take the largest prompt->image attention whatever the scene?

A sink (or register) patch collects attention regardless of content (as in large ViTs, "Vision
Transformers Need Registers"). Over many frames of different scenes, a content-driven map puts its
maximum in many places; a sink puts it on the same patch in most frames.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

import torch

from ..errors import InputError

__all__ = ["argmax_patches", "sink_statistic"]


def argmax_patches(maps: torch.Tensor) -> list[int]:
    """Flat index of each map's largest entry (the first on ties). maps: (F, h, w) -> F ints."""
    if maps.dim() != 3:
        raise InputError(f"maps must be (frames, h, w), got {tuple(maps.shape)}")
    if not torch.isfinite(maps).all():
        raise InputError("maps contain NaN or infinite values")
    return [int(i) for i in torch.argmax(maps.flatten(1), dim=1)]


def sink_statistic(
    argmax: Sequence[int], grid: tuple[int, int], in_region: Sequence[bool | None] | None = None
) -> dict[str, Any]:
    """Share of frames whose argmax is the single most common argmax patch, and where that patch is.

    argmax: per frame, the flat patch index of the largest prompt->image attention.
    in_region: per frame, whether that frame's argmax lay in the task region (None: unknown).
    Returns top_patch (flat), top_row/top_col, top_share (the sink statistic: > 0.5 means one
    patch takes the maximum in most scenes), distinct (how many patches were ever the argmax),
    top_in_region_share (of the frames whose argmax is the top patch, the share where it lay on
    the task region; NaN if unknown), argmax_in_region_share (all frames), and the 5 most
    common patches as [flat, count]. Ties for the top go to the lower flat index.
    """
    h, w = grid
    idx = [int(i) for i in argmax]
    if not idx:
        raise InputError("sink_statistic needs at least one frame")
    if any(not 0 <= i < h * w for i in idx):
        raise InputError(f"argmax indices must lie in [0, {h * w}) for a {h}x{w} grid")
    if in_region is not None and len(in_region) != len(idx):
        raise InputError(f"in_region has {len(in_region)} frames, argmax {len(idx)}")
    counts = Counter(idx)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    top, n_top = ranked[0]

    def share(flags: list[bool | None]) -> float:
        known = [bool(f) for f in flags if f is not None]
        return sum(known) / len(known) if known else float("nan")

    flags = list(in_region) if in_region is not None else [None] * len(idx)
    return {
        "frames": len(idx),
        "top_patch": top,
        "top_row": top // w,
        "top_col": top % w,
        "top_count": n_top,
        "top_share": n_top / len(idx),
        "sink": n_top / len(idx) > 0.5,
        "distinct": len(counts),
        "top_in_region_share": share([f for i, f in zip(idx, flags) if i == top]),
        "argmax_in_region_share": share(flags),
        "most_common": [[i, n] for i, n in ranked[:5]],
    }
