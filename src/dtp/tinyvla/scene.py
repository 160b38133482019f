"""What a frame shows, as a small description the grounding questions are asked about.

A `Scene` lists the objects of one camera frame: a noun and colour word for each (what an
instruction would call it) and where it is on the model's patch grid, measured from the
simulator's segmentation. The questions (`dtp.tinyvla.questions`) read only this, so they
can be checked on hand-made scenes; `scene_from_masks` builds one from per-object pixel
masks (pure), and `dtp.tinyvla.grounding.scene_from_env` fills those masks from the env.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError

__all__ = ["SceneObject", "Scene", "MIN_PIXELS", "cell_token", "scene_from_masks", "object_words", "patch_mask", "patch_word_maps"]

MIN_PIXELS = 6  # an object with fewer visible pixels (at 96 px) is too small to ask about or count
ROLES = ("task_object", "goal", "gripper", "lookalike", "distractor", "robot", "added")  # as dtp.envs.scene


def cell_token(row: int, col: int) -> str:
    """The answer word for patch (row, col) of the grid: 'cell_<row>_<col>' (one word token)."""
    return f"cell_{int(row)}_{int(col)}"


@dataclass(frozen=True)
class SceneObject:
    """One object of a frame.

    name: identity ("task_object", "goal", "gripper", "lookalike_0", "distractor_0", ...); role: one of ROLES.
    noun / colour: the words questions use ("puck", "yellow"); colour None when it has none.
    shape: the object's geometric shape word, for shape questions (None when not a primitive).
    pixels: visible pixels; cell: the patch (row, col) holding most of them (the pointing
    answer); cells: every patch with at least one of its pixels; col: pixel-centroid column
    in patch units (for left/right relations).
    """

    name: str
    role: str
    noun: str
    colour: str | None
    shape: str | None
    pixels: int
    cell: tuple[int, int] | None
    cells: tuple[tuple[int, int], ...]
    col: float

    @property
    def visible(self) -> bool:
        return self.pixels >= MIN_PIXELS

    @property
    def present(self) -> bool:
        """Any pixel on screen (a partly hidden object still makes a description ambiguous)."""
        return self.pixels > 0

    def phrase(self) -> str:
        return f"{self.colour} {self.noun}" if self.colour else self.noun


@dataclass(frozen=True)
class Scene:
    """The objects of one frame on a (rows, cols) patch grid."""

    grid: tuple[int, int]
    objects: tuple[SceneObject, ...]

    def __post_init__(self) -> None:
        names = [o.name for o in self.objects]
        if len(set(names)) != len(names):
            raise InputError(f"scene object names must be unique, got {names}")
        bad = [o.role for o in self.objects if o.role not in ROLES]
        if bad:
            raise InputError(f"unknown scene object roles {bad}; known: {ROLES}")


def scene_from_masks(
    masks: dict[str, np.ndarray],  # name -> (H, W) bool pixel mask
    info: dict[str, dict],  # name -> {"role", "noun", "colour", "shape"}
    grid: tuple[int, int],
) -> Scene:
    """Measure each object's mask on the patch grid (H, W must be multiples of the grid)."""
    rows, cols = grid
    objects = []
    for name, mask in masks.items():
        mask = np.asarray(mask, dtype=bool)
        h, w = mask.shape
        if h % rows or w % cols:
            raise InputError(f"a {h}x{w} mask does not split into a {rows}x{cols} patch grid")
        ph, pw = h // rows, w // cols
        per_cell = mask.reshape(rows, ph, cols, pw).sum(axis=(1, 3))  # (rows, cols) pixel counts
        pixels = int(per_cell.sum())
        cells = tuple((int(r), int(c)) for r, c in zip(*np.nonzero(per_cell)))
        cell = None
        if pixels:
            flat = int(np.argmax(per_cell))  # ties: the first in row-major order
            cell = (flat // cols, flat % cols)
        col = float(np.nonzero(mask)[1].mean() / pw) if pixels else float("nan")
        meta = info[name]
        objects.append(
            SceneObject(
                name=name, role=meta["role"], noun=meta["noun"], colour=meta.get("colour"),
                shape=meta.get("shape"), pixels=pixels, cell=cell, cells=cells, col=col,
            )
        )
    return Scene(grid=(rows, cols), objects=tuple(objects))


def object_words(obj: SceneObject) -> set[str]:
    """The words that describe `obj`: its noun, colour and shape (those it has)."""
    return {w for w in (obj.noun, obj.colour, obj.shape) if w}


def patch_mask(objects, grid: tuple[int, int]) -> np.ndarray:
    """(rows * cols,) bool, row-major as the image tokens: True where a patch holds a pixel of any of `objects`."""
    rows, cols = grid
    out = np.zeros(rows * cols, dtype=bool)
    for o in objects:
        for r, c in o.cells:
            out[r * cols + c] = True
    return out


def patch_word_maps(scene: Scene, words: list[str]) -> np.ndarray:
    """Dense labels for the VLM stage: (len(words), rows * cols) bool, True where a patch holds a
    pixel of an object that `words[i]` describes (row-major patches, as the image tokens).

    A per-patch "which words apply here" target, the dense counterpart of the pointing
    questions, so the encoder learns colour and shape where each object is.
    """
    rows, cols = scene.grid
    out = np.zeros((len(words), rows * cols), dtype=bool)
    index = {w: i for i, w in enumerate(words)}
    for obj in scene.objects:
        hits = [index[w] for w in object_words(obj) if w in index]
        out[hits] |= patch_mask([obj], scene.grid)
    return out
