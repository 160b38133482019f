"""Known answers of the colour-swap frame score (dtp.analysis.grounding_shift)."""

import math

import pytest
import torch

from dtp.analysis.grounding_shift import region_moved
from dtp.errors import InputError


def _mask(h, w, cells):
    m = torch.zeros(h, w, dtype=torch.bool)
    for i, j in cells:
        m[i, j] = True
    return m


NAMED = _mask(4, 4, [(0, 0), (0, 1)])
LOOK = _mask(4, 4, [(3, 2), (3, 3)])


def test_g_that_jumps_to_the_lookalike_moved():
    s = region_moved(NAMED, LOOK, NAMED, LOOK)
    assert s.moved is True
    assert (s.named_original, s.lookalike_original, s.named_swapped, s.lookalike_swapped) == (1.0, 0.0, 0.0, 1.0)


def test_g_that_ignores_the_words_did_not_move():
    g = NAMED | LOOK  # covers both, whatever the words
    s = region_moved(g, g.clone(), NAMED, LOOK)
    assert s.moved is False and s.lookalike_swapped == s.lookalike_original == 1.0


def test_g_that_grows_on_the_lookalike_but_still_prefers_the_named_object_did_not_move():
    g1 = NAMED | _mask(4, 4, [(3, 2)])  # half the lookalike, all of the named object
    s = region_moved(NAMED, g1, NAMED, LOOK)
    assert s.lookalike_swapped == 0.5 and s.named_swapped == 1.0 and s.moved is False


def test_shared_patches_are_dropped_from_both_masks():
    named = _mask(4, 4, [(1, 1), (1, 2)])
    look = _mask(4, 4, [(1, 2), (1, 3)])  # (1, 2) shows both objects
    s = region_moved(_mask(4, 4, [(1, 1)]), _mask(4, 4, [(1, 2), (1, 3)]), named, look)
    assert s.named_swapped == 0.0 and s.lookalike_swapped == 1.0 and s.moved is True


def test_a_hidden_lookalike_cannot_be_scored():
    s = region_moved(NAMED, NAMED, NAMED, torch.zeros(4, 4, dtype=torch.bool))
    assert s.moved is None and math.isnan(s.lookalike_swapped)


def test_shapes_must_match():
    with pytest.raises(InputError, match="one shape"):
        region_moved(NAMED, torch.zeros(3, 4, dtype=torch.bool), NAMED, LOOK)
