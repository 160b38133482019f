"""Benchmark variants: `plain` (the benchmark the shipped model was trained on) and `grounded`.

plain: fixed task colours, instructions that never need reading, generic distractors chosen
    to look unlike anything the task needs (the original benchmark, unchanged).
grounded: the task object (and goal marker, where the task has one) is recoloured at every
    reset with a colour drawn from the split's palette and named in the instruction
    ("push the red puck to the green goal"); 1-4 lookalikes (same shape and size, other
    colours, visual-only) stand where a policy that ignores the colour word would go.

A variant maps a split name ("train", "ood") to its colours, generic distractor shapes and
lookalike counts; `DistractorConfig` may replace any of them (custom splits).
"""

from __future__ import annotations

from dataclasses import dataclass

from dtp.errors import ConfigError, did_you_mean

RGB = tuple[float, float, float]


@dataclass(frozen=True)
class Split:
    """What one split of a variant draws from."""

    palette: dict[str, RGB]
    shapes: tuple[str, ...]  # generic distractor shapes
    lookalikes: tuple[int, int]  # inclusive range of lookalikes per scene


@dataclass(frozen=True)
class Variant:
    """A benchmark variant: its splits, and whether scenes name and recolour the task parts."""

    name: str
    description: str
    splits: dict[str, Split]
    grounded: bool

    def split(self, name: str) -> Split:
        try:
            return self.splits[name]
        except KeyError:
            raise ConfigError(
                f"variant {self.name!r} has no split {name!r}{did_you_mean(name, self.splits)}; choose one of "
                f"{sorted(self.splits)} "
                "or give a palette mapping colour names to RGB"
            ) from None


# The original benchmark: colours chosen away from the task colours (red robot/button/reach
# goal, yellow puck, green push goal and drawer, blue pick-place goal).
PLAIN = Variant(
    name="plain",
    description="fixed task colours, generic distractors",
    splits={
        "train": Split(
            palette={
                "purple": (0.55, 0.20, 0.85),
                "cyan": (0.00, 0.80, 0.85),
                "orange": (1.00, 0.50, 0.00),
                "pink": (1.00, 0.50, 0.75),
                "white": (0.95, 0.95, 0.95),
            },
            shapes=("box", "sphere", "cylinder"),
            lookalikes=(0, 0),
        ),
        "ood": Split(
            palette={
                "brown": (0.50, 0.30, 0.12),
                "black": (0.08, 0.08, 0.08),
                "grey": (0.50, 0.50, 0.55),
                "teal": (0.00, 0.45, 0.40),
                "navy": (0.10, 0.15, 0.45),
            },
            shapes=("capsule", "ellipsoid"),
            lookalikes=(0, 0),
        ),
    },
    grounded=False,
)

# Grounded: the train colours name the task parts in demos; the ood colours never appear in
# train scenes (at least 0.2 apart in RGB from every train colour, tested).
GROUNDED = Variant(
    name="grounded",
    description="task object and goal recoloured and named in the instruction, lookalike distractors",
    splits={
        "train": Split(
            palette={
                "red": (0.85, 0.10, 0.10),
                "green": (0.10, 0.70, 0.15),
                "blue": (0.10, 0.25, 0.90),
                "yellow": (1.00, 0.85, 0.00),
                "purple": (0.55, 0.20, 0.85),
                "orange": (1.00, 0.50, 0.00),
            },
            shapes=("box", "sphere", "cylinder"),
            lookalikes=(1, 4),
        ),
        "ood": Split(
            palette={
                "pink": (1.00, 0.45, 0.75),
                "cyan": (0.00, 0.80, 0.85),
                "brown": (0.45, 0.25, 0.08),
                "white": (0.95, 0.95, 0.95),
                "black": (0.08, 0.08, 0.08),
                "grey": (0.50, 0.50, 0.55),
                "navy": (0.05, 0.08, 0.40),
                "teal": (0.00, 0.45, 0.40),
            },
            shapes=("capsule", "ellipsoid"),
            lookalikes=(3, 6),
        ),
    },
    grounded=True,
)

# What a part of a grounded scene that the instruction never names wears when it would
# otherwise show a palette colour (reach's unused puck is yellow, drawer-open's pull target
# green in plain scenes): a tan far from every palette colour, so no colour word refers to it.
NEUTRAL_RGB: RGB = (0.80, 0.70, 0.52)

VARIANTS: dict[str, Variant] = {v.name: v for v in (PLAIN, GROUNDED)}
DEFAULT_VARIANT = "grounded"


def get_variant(name: str) -> Variant:
    """The variant called `name`; ConfigError listing the known ones otherwise."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise ConfigError(
            f"unknown benchmark variant {name!r}{did_you_mean(name, VARIANTS)}; known: {', '.join(VARIANTS)}"
        ) from None


def all_colour_names() -> list[str]:
    """Every colour name any registered variant's split can use (for the instruction vocabulary)."""
    return sorted({c for v in VARIANTS.values() for s in v.splits.values() for c in s.palette})
