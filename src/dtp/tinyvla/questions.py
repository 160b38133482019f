"""Grounding questions about a `Scene`, with answers that are single vocabulary words.

Kinds (a registry, `QUESTION_KINDS`):
    point       "where is the red puck"                -> cell_<row>_<col> (its patch)
    colour      "what colour is the cylinder"          -> a colour word
    colour_rel  "what colour is the box left of the gripper" -> a colour word
    shape       "what shape is the purple object"     -> a shape word
    count       "how many objects are there" / "how many cyan objects are there" -> a digit

Only unambiguous questions are asked: the object a question names must be the only one
with that description among the objects with any visible pixel, and big enough to see
(MIN_PIXELS); a count is asked only when no counted object is half-hidden. Answers are
one word each so that a checkpoint's tokenizer holds them as ordinary word tokens, before
the action bins (whose ids keep their meaning: `num_words + bin`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .scene import Scene, SceneObject, cell_token

__all__ = ["QA", "QUESTION_KINDS", "candidates", "ask", "grounding_words", "COLOUR_WORDS", "SHAPE_WORDS"]

# colour words of today's benchmark (task objects, goals) and of both distractor palettes; a
# vocabulary built with `grounding_words(extra_colours=...)` adds any others a split uses
COLOUR_WORDS = ("black", "blue", "brown", "cyan", "green", "grey", "navy", "orange", "pink", "purple",
                "red", "teal", "white", "yellow")
SHAPE_WORDS = ("box", "sphere", "cylinder", "capsule", "ellipsoid")
NOUN_WORDS = ("puck", "ball", "button", "drawer", "handle", "gripper", *SHAPE_WORDS)
QUESTION_WORDS = ("where", "is", "the", "what", "colour", "shape", "how", "many", "objects", "object",
                  "are", "there", "left", "right", "of")
MAX_COUNT = 9
SIDE_MARGIN = 0.5  # patches: "left of X" needs the object's centroid this far left of X's


@dataclass(frozen=True)
class QA:
    kind: str
    question: str
    answer: str  # one vocabulary word


def grounding_words(grid: tuple[int, int], extra_colours: tuple[str, ...] = ()) -> list[str]:
    """Every word a question or answer can use on this grid (cells, digits, colours, nouns)."""
    rows, cols = grid
    cells = [cell_token(r, c) for r in range(rows) for c in range(cols)]
    digits = [str(d) for d in range(MAX_COUNT + 1)]
    return sorted({*cells, *digits, *COLOUR_WORDS, *extra_colours, *NOUN_WORDS, *QUESTION_WORDS})


def _present(scene: Scene) -> list[SceneObject]:
    return [o for o in scene.objects if o.present]


def _unique(objs: list[SceneObject], key: Callable[[SceneObject], object], value) -> SceneObject | None:
    """The single object with key(o) == value, or None when there are zero or several."""
    hits = [o for o in objs if key(o) == value]
    return hits[0] if len(hits) == 1 else None


def _point(scene: Scene) -> list[QA]:
    out = []
    present = _present(scene)
    for o in present:
        if not o.visible:
            continue
        if _unique(present, lambda x: (x.noun, x.colour), (o.noun, o.colour)) is o:
            out.append(QA("point", f"where is the {o.phrase()}", cell_token(*o.cell)))
    return out


def _colour(scene: Scene) -> list[QA]:
    present = _present(scene)
    return [
        QA("colour", f"what colour is the {o.noun}", o.colour)
        for o in present
        if o.visible and o.colour and _unique(present, lambda x: x.noun, o.noun) is o
    ]


def _colour_rel(scene: Scene) -> list[QA]:
    """'what colour is the <noun> left/right of the <ref>' where exactly one <noun> lies on that side."""
    out = []
    present = _present(scene)
    refs = [r for r in present if r.visible and _unique(present, lambda x: (x.noun, x.colour), (r.noun, r.colour)) is r]
    nouns = sorted({o.noun for o in present if o.colour})
    for ref in refs:
        for noun in nouns:
            group = [o for o in present if o.noun == noun and o is not ref]
            if len(group) < 2:  # with one, the plain colour question asks the same
                continue
            left = [o for o in group if o.col < ref.col - SIDE_MARGIN]
            right = [o for o in group if o.col > ref.col + SIDE_MARGIN]
            if len(left) + len(right) != len(group):  # one sits near the ref's column: ambiguous
                continue
            for side, objs in (("left", left), ("right", right)):
                if len(objs) == 1 and objs[0].visible and objs[0].colour:
                    out.append(QA("colour_rel", f"what colour is the {noun} {side} of the {ref.phrase()}",
                                  objs[0].colour))
    return out


def _shape(scene: Scene) -> list[QA]:
    present = _present(scene)
    return [
        QA("shape", f"what shape is the {o.colour} object", o.shape)
        for o in present
        if o.visible and o.colour and o.shape and _unique(present, lambda x: x.colour, o.colour) is o
    ]


def _count(scene: Scene) -> list[QA]:
    """How many objects (not the gripper), overall and per colour; only when none is half-hidden."""
    things = [o for o in scene.objects if o.role != "gripper"]
    if any(o.present and not o.visible for o in things):
        return []
    visible = [o for o in things if o.visible]
    out = []
    if len(visible) <= MAX_COUNT:
        out.append(QA("count", "how many objects are there", str(len(visible))))
    for colour in sorted({o.colour for o in visible if o.colour}):
        n = sum(o.colour == colour for o in visible)
        out.append(QA("count", f"how many {colour} objects are there", str(n)))
    return out


QUESTION_KINDS: dict[str, Callable[[Scene], list[QA]]] = {
    "point": _point,
    "colour": _colour,
    "colour_rel": _colour_rel,
    "shape": _shape,
    "count": _count,
}


def candidates(scene: Scene) -> dict[str, list[QA]]:
    """Every unambiguous question of each kind about `scene` (kinds with none are left out)."""
    out = {}
    for kind, make in QUESTION_KINDS.items():
        qs = make(scene)
        if qs:
            out[kind] = qs
    return out


def ask(scene: Scene, rng: np.random.Generator, n: int, weights: dict[str, float] | None = None) -> list[QA]:
    """Up to n distinct questions: each draw picks a kind (by `weights`, default: pointing
    twice as often as each other kind) among those still available, then a question of it."""
    weights = weights or {"point": 2.0}
    pool = {k: list(v) for k, v in candidates(scene).items()}
    chosen: list[QA] = []
    while len(chosen) < n and pool:
        kinds = sorted(pool)
        w = np.array([weights.get(k, 1.0) for k in kinds], dtype=float)
        kind = kinds[int(rng.choice(len(kinds), p=w / w.sum()))]
        qs = pool[kind]
        chosen.append(qs.pop(int(rng.integers(len(qs)))))
        if not qs:
            del pool[kind]
    return chosen
