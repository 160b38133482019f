"""Seed sets of the lab: which scenes are test scenes and which are validation scenes.

Seed set s, scene i is the reset seed `EVAL_SEED_BASE + s * SEED_SET_STRIDE + i`, far from the
demonstration seeds (dtp.envs.demos). Set 0 holds the reported test scenes; set 1 the validation
scenes every choice (tau, layers, training options) is made on.
"""

from __future__ import annotations

EVAL_SEED_BASE = 1_000_000  # far from the demonstration seeds the models were trained on
SEED_SET_STRIDE = 10_000  # scenes per seed set
TEST_SEED = 0  # seed set of the reported test runs
VALIDATION_SEED = 1  # seed set of every choice made before a test run


def scene_seed(seed: int, index: int) -> int:
    """The reset seed of scene `index` in seed set `seed`."""
    return EVAL_SEED_BASE + seed * SEED_SET_STRIDE + index


def seed_set(seed: int, episodes: int) -> list[int]:
    """The first `episodes` reset seeds of seed set `seed`."""
    return [scene_seed(seed, i) for i in range(episodes)]


def validation_seeds(episodes: int, seed: int = VALIDATION_SEED) -> list[int]:
    """Reset seeds of validation scenes (seed set 1 by default), never the test scenes of set 0."""
    return seed_set(seed, episodes)


def seed_set_of(reset_seed: int) -> tuple[int, int] | None:
    """(seed set, scene index) of an evaluation reset seed; None for a seed below EVAL_SEED_BASE."""
    if reset_seed < EVAL_SEED_BASE:
        return None
    return divmod(reset_seed - EVAL_SEED_BASE, SEED_SET_STRIDE)
