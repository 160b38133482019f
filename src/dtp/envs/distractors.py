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
import math
import re
from typing import Callable, Mapping, Sequence, Union

import numpy as np

from dtp.envs.rendering import mujoco
from dtp.envs.variants import PLAIN, Variant
from dtp.errors import ConfigError

log = logging.getLogger(__name__)

Palette = Union[str, Mapping[str, Sequence[float]]]
MAX_LOOKALIKES = 8

# The plain variant's splits, by their old names (colours chosen away from the task colours).
PALETTES: dict[str, dict[str, tuple[float, float, float]]] = {k: dict(v.palette) for k, v in PLAIN.splits.items()}
SHAPES: dict[str, tuple[str, ...]] = {k: v.shapes for k, v in PLAIN.splits.items()}
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


def validate_palette(palette: Mapping[str, Sequence[float]]) -> dict[str, tuple[float, float, float]]:
    """A custom palette checked and copied: one lower-case word per colour, RGB in [0, 1], all distinct.

    Raises ConfigError naming the offending entry.
    """
    if not isinstance(palette, Mapping) or not palette:
        raise ConfigError(f"a palette is a split name or a non-empty mapping colour name -> RGB, got {palette!r}")
    out: dict[str, tuple[float, float, float]] = {}
    for name, rgb in palette.items():
        if not isinstance(name, str) or not re.fullmatch(r"[a-z]+", name):
            raise ConfigError(f"colour name {name!r} must be one lower-case word (a-z), as instructions use it")
        try:
            values = tuple(float(c) for c in rgb)
        except (TypeError, ValueError):
            raise ConfigError(f"colour {name!r}: RGB must be three numbers in [0, 1], got {rgb!r}") from None
        if len(values) != 3 or not all(math.isfinite(c) and 0.0 <= c <= 1.0 for c in values):
            raise ConfigError(f"colour {name!r}: RGB must be three numbers in [0, 1], got {rgb!r}")
        out[name] = values  # type: ignore[assignment]
    seen: dict[tuple[float, float, float], str] = {}
    for name, rgb in out.items():
        if rgb in seen:
            raise ConfigError(f"colours {seen[rgb]!r} and {name!r} have the same RGB {rgb}")
        seen[rgb] = name
    return out


@dataclass(frozen=True)
class DistractorConfig:
    """Distractors and colours of a scene: a named split of the variant, or a custom one.

    count: generic distractor slots in the scene (a reset may show fewer, see `make_env`).
    palette: a split name of the variant ("train", "ood") or a custom mapping colour name
        -> RGB in [0, 1]. In the grounded variant the task object, goal and lookalikes take
        distinct colours from it; generic distractors draw from it too.
    shapes: generic distractor shape names; None means the split's (train: box, sphere,
        cylinder; ood: capsule, ellipsoid; a custom palette takes the train shapes).
    clearance: minimum gap in metres (on the table plane) between a generic distractor's
        footprint and the task object(s), the goal, the lookalikes and the hand.
    lookalikes: lookalikes per scene (grounded variant), a count or an inclusive range
        (lo, hi); None means the split's (train 1-4, ood 3-6; custom: train's).
    """

    count: int = 0
    palette: Palette = "train"
    shapes: tuple[str, ...] | None = None
    clearance: float = 0.10
    lookalikes: int | tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.count < 0:
            raise ConfigError(f"distractor count must be >= 0, got {self.count}")
        if isinstance(self.palette, str):
            if not any(self.palette in v.splits for v in _variants()):
                known = sorted({s for v in _variants() for s in v.splits})
                raise ConfigError(f"palette must be one of {known} or a mapping colour -> RGB, got {self.palette!r}")
        else:
            object.__setattr__(self, "palette", validate_palette(self.palette))
        if self.shapes is not None:
            object.__setattr__(self, "shapes", tuple(self.shapes))
            if not self.shapes:
                raise ConfigError("shapes must name at least one shape (or be None for the split's)")
        unknown = set(self.shapes or ()) - set(_GEOM_TYPE)
        if unknown:
            raise ConfigError(f"unknown distractor shapes {sorted(unknown)}; known: {sorted(_GEOM_TYPE)}")
        if self.lookalikes is not None:
            lo, hi = (self.lookalikes, self.lookalikes) if isinstance(self.lookalikes, int) else self.lookalikes
            if not 0 <= int(lo) <= int(hi) <= MAX_LOOKALIKES:
                raise ConfigError(f"lookalikes must be a count or range within [0, {MAX_LOOKALIKES}], "
                                  f"got {self.lookalikes!r}")
            object.__setattr__(self, "lookalikes", (int(lo), int(hi)))

    @property
    def split(self) -> str:
        """The split's name, or "custom" for a palette mapping."""
        return self.palette if isinstance(self.palette, str) else "custom"

    def _split(self, variant: Variant):
        return variant.split(self.palette if isinstance(self.palette, str) else "train")

    def colours(self, variant: Variant = PLAIN) -> dict[str, tuple[float, float, float]]:
        """Colour name -> RGB this config draws from in `variant`."""
        return dict(self.palette) if not isinstance(self.palette, str) else dict(self._split(variant).palette)

    def shapes_for(self, variant: Variant = PLAIN) -> tuple[str, ...]:
        return tuple(self.shapes) if self.shapes else self._split(variant).shapes

    def lookalike_range(self, variant: Variant = PLAIN) -> tuple[int, int]:
        """Inclusive (lo, hi) lookalikes per scene; ConfigError when asked of the plain variant."""
        rng = self.lookalikes if self.lookalikes is not None else self._split(variant).lookalikes
        if not variant.grounded and rng[1] > 0:
            raise ConfigError(f"the {variant.name!r} variant has no lookalikes; use the grounded variant")
        return rng

    @property
    def shape_names(self) -> tuple[str, ...]:
        """Generic distractor shapes in the plain variant (kept for callers of the old API)."""
        return self.shapes_for(PLAIN)

    def to_dict(self) -> dict:
        return {"count": self.count, "palette": self.palette if isinstance(self.palette, str) else
                {k: list(v) for k, v in self.palette.items()},
                "shapes": list(self.shapes) if self.shapes else None, "clearance": self.clearance,
                "lookalikes": list(self.lookalikes) if self.lookalikes is not None else None}


def _variants():
    from dtp.envs.variants import VARIANTS

    return VARIANTS.values()


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
    *,
    palette: dict[str, tuple[float, float, float]] | None = None,
    shapes: tuple[str, ...] | None = None,
) -> list[Distractor]:
    """Draw `count` distractors on the table, clear of `keepout` discs and of each other.

    keepout: (xy centre, radius) discs of things to keep clear of (task objects, goal,
    hand); a distractor's footprint keeps `config.clearance` from each disc.
    accept: optional extra test on a candidate's world position (the env uses it to
    keep distractors where the camera sees the table, not behind the arm). A
    distractor that finds no room in `max_tries` draws is dropped (logged).
    palette, shapes: what to draw from (default: the config's in the plain variant).
    """
    palette = palette if palette is not None else config.colours(PLAIN)
    shapes = shapes if shapes is not None else config.shapes_for(PLAIN)
    colours = sorted(palette)
    placed: list[Distractor] = []
    for _ in range(count):
        shape = shapes[int(rng.integers(len(shapes)))]
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
