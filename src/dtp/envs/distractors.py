"""Visual-only distractor objects: configuration, seeded placement, and scene edits.

Distractors are primitive shapes with no collision (contype = conaffinity = 0), so they
change what the camera sees but never the physics. A fixed number of slots is added
to the scene spec once at construction; each reset draws shape, size, colour and a
table position for every slot from the reset seed, at least `clearance` from the task
object(s), the goal and the hand. The "ood" split holds out both colours and shapes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Literal

import numpy as np

from dtp.envs.rendering import mujoco

log = logging.getLogger(__name__)

Palette = Literal["train", "ood"]

# Colours chosen away from the task colours (red robot/button/reach goal, yellow puck,
# green push goal and drawer, blue pick-place goal).
PALETTES: dict[str, dict[str, tuple[float, float, float]]] = {
    "train": {
        "purple": (0.55, 0.20, 0.85),
        "cyan": (0.00, 0.80, 0.85),
        "orange": (1.00, 0.50, 0.00),
        "pink": (1.00, 0.50, 0.75),
        "white": (0.95, 0.95, 0.95),
    },
    "ood": {
        "brown": (0.50, 0.30, 0.12),
        "black": (0.08, 0.08, 0.08),
        "grey": (0.50, 0.50, 0.55),
        "teal": (0.00, 0.45, 0.40),
        "navy": (0.10, 0.15, 0.45),
    },
}
SHAPES: dict[str, tuple[str, ...]] = {
    "train": ("box", "sphere", "cylinder"),
    "ood": ("capsule", "ellipsoid"),
}
_GEOM_TYPE = {
    "box": mujoco.mjtGeom.mjGEOM_BOX,
    "sphere": mujoco.mjtGeom.mjGEOM_SPHERE,
    "cylinder": mujoco.mjtGeom.mjGEOM_CYLINDER,
    "capsule": mujoco.mjtGeom.mjGEOM_CAPSULE,
    "ellipsoid": mujoco.mjtGeom.mjGEOM_ELLIPSOID,
}
SLOT_PREFIX = "dtp_distractor_"
HIDDEN_GROUP = 5  # a geom group the renderer does not draw (mjvOption default)
# Table area where distractors go: on the table top and inside the camera's view.
TABLE_X = (-0.3, 0.3)
TABLE_Y = (0.45, 0.92)


@dataclass(frozen=True)
class DistractorConfig:
    """How many distractors, from which split, and how far they keep from the task.

    count: distractor slots in the scene (a reset may show fewer, see `make_env`).
    palette: "train" colours or held-out "ood" colours.
    shapes: shape names to draw from; None means the palette's split
        ("train": box, sphere, cylinder; "ood": capsule, ellipsoid).
    clearance: minimum gap in metres (on the table plane) between a distractor's
        footprint and the task object(s), the goal and the hand.
    """

    count: int = 0
    palette: Palette = "train"
    shapes: tuple[str, ...] | None = None
    clearance: float = 0.10

    def __post_init__(self) -> None:
        if self.count < 0:
            raise ValueError(f"distractor count must be >= 0, got {self.count}")
        if self.palette not in PALETTES:
            raise ValueError(f"palette must be one of {sorted(PALETTES)}, got {self.palette!r}")
        unknown = set(self.shapes or ()) - set(_GEOM_TYPE)
        if unknown:
            raise ValueError(f"unknown distractor shapes {sorted(unknown)}; known: {sorted(_GEOM_TYPE)}")

    @property
    def shape_names(self) -> tuple[str, ...]:
        return tuple(self.shapes) if self.shapes else SHAPES[self.palette]


@dataclass(frozen=True)
class Distractor:
    """One placed distractor: what it is and where (world frame)."""

    shape: str
    colour: str
    rgba: tuple[float, float, float, float]
    size: tuple[float, float, float]
    pos: tuple[float, float, float]
    quat: tuple[float, float, float, float]
    radius: float = field(default=0.0)  # footprint radius on the table plane


def add_slots(spec: "mujoco.MjSpec", count: int) -> None:
    """Add `count` hidden, collision-free distractor bodies to a scene spec."""
    for i in range(count):
        body = spec.worldbody.add_body(name=f"{SLOT_PREFIX}{i}", pos=[0.0, 0.0, -5.0])
        body.add_geom(
            name=f"{SLOT_PREFIX}{i}",
            type=mujoco.mjtGeom.mjGEOM_BOX,
            size=[0.02, 0.02, 0.02],
            rgba=[1.0, 1.0, 1.0, 1.0],
            contype=0,
            conaffinity=0,
            group=HIDDEN_GROUP,
        )


def _yaw_quat(yaw: float, lie_down: bool) -> tuple[float, float, float, float]:
    """Quaternion for a rotation about z by `yaw`, after tipping the z axis onto x if lying."""
    qz = np.array([np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)])
    if not lie_down:
        return tuple(float(q) for q in qz)
    qy = np.array([np.cos(np.pi / 4), 0.0, np.sin(np.pi / 4), 0.0])
    out = np.empty(4)
    mujoco.mju_mulQuat(out, qz, qy)
    return tuple(float(q) for q in out)


def _draw_shape(rng: np.random.Generator, shape: str) -> tuple[tuple[float, float, float], float, float, bool]:
    """Random size for a shape: (geom size, footprint radius, centre height, lies down)."""
    u = rng.uniform
    if shape == "box":
        a, b, c = u(0.015, 0.035), u(0.015, 0.035), u(0.015, 0.035)
        return (a, b, c), float(np.hypot(a, b)), c, False
    if shape == "sphere":
        r = u(0.018, 0.032)
        return (r, 0.0, 0.0), r, r, False
    if shape == "cylinder":
        r, h = u(0.015, 0.03), u(0.015, 0.04)
        return (r, h, 0.0), r, h, False
    if shape == "capsule":  # lying on its side
        r, h = u(0.012, 0.02), u(0.02, 0.04)
        return (r, h, 0.0), h + r, r, True
    if shape == "ellipsoid":
        a, b, c = u(0.02, 0.04), u(0.015, 0.03), u(0.012, 0.025)
        return (a, b, c), max(a, b), c, False
    raise ValueError(f"unknown shape {shape!r}")


def sample_layout(
    rng: np.random.Generator,
    count: int,
    config: DistractorConfig,
    keepout: list[tuple[np.ndarray, float]],
    accept: Callable[[np.ndarray], bool] | None = None,
    max_tries: int = 500,
) -> list[Distractor]:
    """Draw `count` distractors on the table, clear of `keepout` discs and of each other.

    keepout: (xy centre, radius) discs of things to keep clear of (task objects, goal,
    hand); a distractor's footprint keeps `config.clearance` from each disc.
    accept: optional extra test on a candidate's world position (the env uses it to
    keep distractors where the camera sees the table, not behind the arm). A
    distractor that finds no room in `max_tries` draws is dropped (logged).
    """
    palette = PALETTES[config.palette]
    colours = sorted(palette)
    placed: list[Distractor] = []
    for _ in range(count):
        shape = config.shape_names[int(rng.integers(len(config.shape_names)))]
        colour = colours[int(rng.integers(len(colours)))]
        size, radius, height, lie = _draw_shape(rng, shape)
        yaw = float(rng.uniform(0, np.pi))
        for _ in range(max_tries):
            xy = np.array([rng.uniform(*TABLE_X), rng.uniform(*TABLE_Y)])
            clear_task = all(
                np.linalg.norm(xy - c) >= config.clearance + radius + r for c, r in keepout
            )
            clear_others = all(
                np.linalg.norm(xy - np.asarray(d.pos[:2])) >= radius + d.radius + 0.02 for d in placed
            )
            if clear_task and clear_others and (
                accept is None or accept(np.array([xy[0], xy[1], height]))
            ):
                placed.append(
                    Distractor(
                        shape=shape,
                        colour=colour,
                        rgba=(*palette[colour], 1.0),
                        size=tuple(float(s) for s in size),
                        pos=(float(xy[0]), float(xy[1]), float(height)),
                        quat=_yaw_quat(yaw, lie),
                        radius=float(radius),
                    )
                )
                break
        else:
            log.warning("no room for distractor %d of %d; dropped", len(placed) + 1, count)
    return placed


def _bounding_radius(shape: str, size: tuple[float, float, float]) -> float:
    """Radius of a sphere around the geom (MuJoCo keeps it per geom for culling)."""
    a, b, c = size
    return {
        "box": float(np.linalg.norm(size)),
        "sphere": a,
        "cylinder": float(np.hypot(a, b)),
        "capsule": a + b,
        "ellipsoid": max(size),
    }[shape]


def apply_layout(model: "mujoco.MjModel", layout: list[Distractor], slots: int) -> None:
    """Write a layout into the model's distractor slots; unused slots are hidden."""
    for i in range(slots):
        body = model.body(f"{SLOT_PREFIX}{i}").id
        geom = model.geom(f"{SLOT_PREFIX}{i}").id
        if i < len(layout):
            d = layout[i]
            model.geom_type[geom] = _GEOM_TYPE[d.shape]
            model.geom_size[geom] = d.size
            model.geom_rbound[geom] = _bounding_radius(d.shape, d.size)
            model.geom_rgba[geom] = d.rgba
            model.geom_group[geom] = 0
            model.body_pos[body] = d.pos
            model.body_quat[body] = d.quat
        else:
            model.geom_group[geom] = HIDDEN_GROUP
            model.body_pos[body] = (0.0, 0.0, -5.0)


def slot_geom_ids(model: "mujoco.MjModel", slots: int) -> list[int]:
    """Geom ids of the distractor slots."""
    return [model.geom(f"{SLOT_PREFIX}{i}").id for i in range(slots)]
