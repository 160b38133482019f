"""Did the important region G follow the colour word? One frame, two instructions, pure math.

A frame is scored with G computed for the original instruction ("push the red puck ...") and
for a swapped one naming a lookalike's colour ("push the blue puck ..."), and the patch masks
of the named object and of that lookalike. Patches that both masks touch are dropped from
both (they cannot tell the two apart). With share_X(G) = |G & X| / |X| over those exclusive
masks, G moved onto the lookalike when, for the swapped G,

    share_lookalike(G_swapped) > share_named(G_swapped)   (it prefers the lookalike now), and
    share_lookalike(G_swapped) > share_lookalike(G_original)   (the swap is what put it there).

A model that ignores the words gives G_swapped == G_original, which fails the second test.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import InputError


@dataclass(frozen=True)
class ShiftScore:
    """Shares of the exclusive named/lookalike patches inside each G, and the verdict.

    moved is None when a mask has no patch of its own (the frame cannot be scored).
    """

    named_original: float
    lookalike_original: float
    named_swapped: float
    lookalike_swapped: float
    moved: bool | None


def _share(g: torch.Tensor, mask: torch.Tensor) -> float:
    n = int(mask.sum())
    return float((g & mask).sum()) / n if n else float("nan")


def region_moved(
    g_original: torch.Tensor,  # (h, w) bool: G for the original instruction
    g_swapped: torch.Tensor,  # (h, w) bool: G for the swapped instruction
    named: torch.Tensor,  # (h, w) bool: patches of the object the original instruction names
    lookalike: torch.Tensor,  # (h, w) bool: patches of the lookalike whose colour the swap names
) -> ShiftScore:
    """Score one frame (see the module docstring for the rule)."""
    shapes = {tuple(t.shape) for t in (g_original, g_swapped, named, lookalike)}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise InputError(f"G and the masks must be (h, w) of one shape, got {sorted(shapes)}")
    g0, g1, a, b = (t.bool() for t in (g_original, g_swapped, named, lookalike))
    a_only, b_only = a & ~b, b & ~a
    s = ShiftScore(
        named_original=_share(g0, a_only), lookalike_original=_share(g0, b_only),
        named_swapped=_share(g1, a_only), lookalike_swapped=_share(g1, b_only), moved=None,
    )
    if not a_only.any() or not b_only.any():
        return s
    moved = s.lookalike_swapped > s.named_swapped and s.lookalike_swapped > s.lookalike_original
    return ShiftScore(s.named_original, s.lookalike_original, s.named_swapped, s.lookalike_swapped, moved)
