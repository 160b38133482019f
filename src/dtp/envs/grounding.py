"""Grounded scenes: named colours on the task object and goal, and lookalikes of both.

At construction, `add_lookalike_slots` adds visual-only copies of each task part to the
scene spec: the task object's body subtree is loaded a second time from the task's XML and
attached with its joints deleted and collisions off (so the physics, qpos and the expert's
state are untouched); a goal site is copied as a geom of the same type and size. Unused
copies sit hidden below the floor. At each reset, `sample_grounding` draws from the reset
seed the colours (all distinct: task object, goal, every lookalike) and where the
lookalikes stand: inside Meta-World's own reset range of the part they copy, widened a
little, so a policy that ignores the colour word has as much reason to go there as to the
real one; never overlapping the real parts or each other. `apply_grounding` writes it into
the model's rgba, material and body arrays (materials are dropped on coloured geoms so the
rgba shows).
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from dtp.envs.rendering import mujoco
from dtp.errors import InputError

log = logging.getLogger(__name__)

LOOKALIKE_PREFIX = "dtp_lookalike_"
HIDDEN_GROUP = 5  # a geom group the renderer does not draw (mjvOption default)
VISIBLE_GROUPS = 3  # geom groups 0-2 are drawn by default
HIDDEN_Z = -5.0
GAP = 0.02  # metres between footprints of lookalikes and real parts


@dataclass(frozen=True)
class Referent:
    """A task part the instruction names by colour, and how its lookalikes are made.

    role: "task_object" or "goal".
    shape: the word for what it is ("puck", "ball", "button", "drawer").
    source: the body whose subtree is the part (task objects) or the goal site.
    coloured: geom names (inside the subtree) that carry the named colour; None means
        every visible geom of the subtree.
    reset_range: which half of Meta-World's reset space the part is drawn from
        ("object": first three numbers, "goal": last three); lookalikes come from the same.
    spread: (x, y) metres the range is widened by on each side, so several fit.
    max_lookalikes: copies in the scene (bulky parts have room for few).
    """

    role: str
    shape: str
    source: str
    is_site: bool
    coloured: tuple[str, ...] | None
    reset_range: str
    spread: tuple[float, float]
    max_lookalikes: int


_PUCK = Referent("task_object", "puck", "obj", False, ("objGeom",), "object", (0.08, 0.06), 6)
_GOAL = Referent("goal", "ball", "goal", True, None, "goal", (0.08, 0.04), 6)

# Per task: the parts its grounded instruction names. Button and drawer lookalikes are whole
# visual copies (a second button box, a second drawer chest) beside the real one.
REFERENTS: dict[str, tuple[Referent, ...]] = {
    "reach": (_GOAL,),
    "push": (_PUCK, _GOAL),
    "pick-place": (_PUCK, _GOAL),
    "button-press-topdown": (
        Referent("task_object", "button", "box", False, ("btnGeom",), "object", (0.22, 0.0), 2),
    ),
    "drawer-open": (Referent("task_object", "drawer", "drawer", False, None, "object", (0.24, 0.0), 1),),
}


def slot_name(role: str, index: int) -> str:
    return f"{LOOKALIKE_PREFIX}{role}_{index}"


def slot_counts(task: str, max_lookalikes: int) -> dict[str, int]:
    """Copies per role for a task when a scene may show up to `max_lookalikes` lookalikes."""
    return {r.role: min(r.max_lookalikes, max_lookalikes) for r in REFERENTS.get(task, ())}


def add_lookalike_slots(spec: "mujoco.MjSpec", xml_path: str, task: str, max_lookalikes: int) -> None:
    """Add hidden, collision-free copies of the task's named parts to a scene spec."""
    for ref in REFERENTS.get(task, ()):
        for i in range(min(ref.max_lookalikes, max_lookalikes)):
            name = slot_name(ref.role, i)
            if ref.is_site:
                site = spec.site(ref.source)
                body = spec.worldbody.add_body(name=name, pos=[0.0, 0.0, HIDDEN_Z])
                body.add_geom(name=f"{name}/geom", type=site.type, size=list(site.size), rgba=list(site.rgba),
                              contype=0, conaffinity=0, group=0)
                continue
            donor = mujoco.MjSpec.from_file(xml_path)
            source = donor.body(ref.source)
            for joint in source.find_all(mujoco.mjtObj.mjOBJ_JOINT):
                joint.delete()  # a welded copy: no new degrees of freedom, qpos unchanged
            for geom in source.find_all(mujoco.mjtObj.mjOBJ_GEOM):
                geom.contype = 0
                geom.conaffinity = 0
            source.pos = [0.0, 0.0, HIDDEN_Z]
            spec.worldbody.add_frame().attach_body(source, f"{name}/", "")


def _subtree(model: "mujoco.MjModel", root: int) -> np.ndarray:
    """Bool per body: `root` or below it."""
    inside = np.zeros(model.nbody, dtype=bool)
    inside[root] = True
    for b in range(root + 1, model.nbody):  # parents precede children
        inside[b] |= inside[model.body_parentid[b]]
    return inside


@dataclass
class PartIds:
    """Model ids of one copy (or the real part): what to move, colour, hide and label."""

    root_body: int  # -1 for the real goal site
    bodies: list[int]
    geoms: list[int]  # every geom of the subtree (collision ones included)
    sites: list[int]
    coloured_geoms: list[int]
    visible_geoms: list[int]
    groups: np.ndarray  # original geom groups of `geoms`
    half_extent: np.ndarray  # (2,) half size of the xy footprint around the root
    object_bodies: list[int] = field(default_factory=list)  # the copy's counterpart of the task object
    object_geoms: list[int] = field(default_factory=list)


def _part_ids(model: "mujoco.MjModel", data: "mujoco.MjData", ref: Referent, prefix: str | None,
              object_bodies: tuple[str, ...] = ()) -> PartIds:
    """Ids of the real part (prefix None) or of a copy (prefix = its slot name).

    object_bodies: the task object's bodies (TaskSpec.object_bodies); a copy's counterparts
    of them are what the copy shows as "the button" or "the drawer" (its housing aside).
    """
    if ref.is_site and prefix is None:
        site = model.site(ref.source).id
        r = float(model.site_size[site][0])
        return PartIds(-1, [], [], [site], [], [], np.zeros(0, int), np.array([r, r]))
    if ref.is_site:  # a goal's copy is one body holding one geom
        root = model.body(prefix).id
    else:  # attach_body prefixed every name of the copied subtree
        root = model.body(ref.source if prefix is None else f"{prefix}/{ref.source}").id
    inside = _subtree(model, root)
    bodies = np.flatnonzero(inside).tolist()
    geoms = np.flatnonzero(inside[model.geom_bodyid]).tolist()
    sites = np.flatnonzero(inside[model.site_bodyid]).tolist()
    visible = [g for g in geoms if model.geom_group[g] < VISIBLE_GROUPS and model.geom_rgba[g][3] > 0]
    if ref.coloured is None or ref.is_site:
        coloured = list(visible)
    else:
        names = {n if prefix is None else f"{prefix}/{n}" for n in ref.coloured}
        coloured = [g for g in geoms if model.geom(g).name in names]
    # footprint: xy bounding box of the visible geoms' AABBs, relative to the root
    lo, hi = np.full(2, np.inf), np.full(2, -np.inf)
    for g in visible:
        rot = data.geom_xmat[g].reshape(3, 3)
        if model.geom_type[g] == mujoco.mjtGeom.mjGEOM_MESH:  # the mesh's AABB is loose: use its vertices
            mesh = model.geom_dataid[g]
            start, count = model.mesh_vertadr[mesh], model.mesh_vertnum[mesh]
            world = data.geom_xpos[g] + model.mesh_vert[start : start + count] @ rot.T  # (V, 3)
            lo = np.minimum(lo, world[:, :2].min(axis=0))
            hi = np.maximum(hi, world[:, :2].max(axis=0))
            continue
        centre, half = model.geom_aabb[g][:3], model.geom_aabb[g][3:]
        world_c = data.geom_xpos[g] + rot @ centre
        world_h = np.abs(rot) @ half
        lo = np.minimum(lo, (world_c - world_h)[:2])
        hi = np.maximum(hi, (world_c + world_h)[:2])
    root_xy = data.xpos[root][:2]
    half = np.maximum(np.abs(lo - root_xy), np.abs(hi - root_xy)) if visible else np.zeros(2)
    if prefix is None or ref.is_site:
        obj_bodies, obj_geoms = bodies, geoms
    else:
        roots = [model.body(f"{prefix}/{b}").id for b in object_bodies] or [root]
        obj = np.zeros(model.nbody, dtype=bool)
        for r in roots:
            obj |= _subtree(model, r)
        obj_bodies = np.flatnonzero(obj).tolist()
        obj_geoms = np.flatnonzero(obj[model.geom_bodyid]).tolist()
    return PartIds(root, bodies, geoms, sites, coloured, visible,
                   model.geom_group[geoms].copy(), half, obj_bodies, obj_geoms)


@dataclass
class GroundingIds:
    """Ids of every named part and its copies, found once per env."""

    real: dict[str, PartIds]  # role -> the real part
    slots: dict[str, list[PartIds]]  # role -> copies


def find_grounding_ids(model, data, task: str, max_lookalikes: int, object_bodies: tuple[str, ...] = ()) -> GroundingIds:
    """Look up the real parts and the copies `add_lookalike_slots` added (needs a forward pass first)."""
    real, slots = {}, {}
    for ref in REFERENTS.get(task, ()):
        real[ref.role] = _part_ids(model, data, ref, None)
        n = min(ref.max_lookalikes, max_lookalikes)
        slots[ref.role] = [_part_ids(model, data, ref, slot_name(ref.role, i), object_bodies) for i in range(n)]
    return GroundingIds(real, slots)


@dataclass(frozen=True)
class Lookalike:
    """One placed lookalike: which part it copies, its colour and where its root stands."""

    mimics: str  # role it copies: "task_object" or "goal"
    shape: str
    colour: str
    rgb: tuple[float, float, float]
    pos: tuple[float, float, float]
    slot: int  # index of the copy used


@dataclass(frozen=True)
class Grounding:
    """Colours of the named parts and the lookalikes of one reset."""

    colours: dict[str, tuple[str, tuple[float, float, float]]]  # role -> (name, rgb)
    lookalikes: tuple[Lookalike, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {"colours": {k: [n, list(c)] for k, (n, c) in self.colours.items()},
                "lookalikes": [asdict(x) for x in self.lookalikes]}


def _range(reset_space_low: np.ndarray, reset_space_high: np.ndarray, ref: Referent) -> tuple[np.ndarray, np.ndarray]:
    sl = slice(0, 3) if ref.reset_range == "object" else slice(-3, None)
    lo, hi = np.array(reset_space_low[sl], float), np.array(reset_space_high[sl], float)
    lo[:2] -= ref.spread
    hi[:2] += ref.spread
    return lo, hi


def _overlaps(xy: np.ndarray, half: np.ndarray, boxes: list[tuple[np.ndarray, np.ndarray]]) -> bool:
    """Does the footprint (centre xy, half size) come within GAP of any of `boxes`?"""
    return any(np.all(np.abs(xy - c) < half + h + GAP) for c, h in boxes)


def sample_grounding(
    rng: np.random.Generator,
    task: str,
    ids: GroundingIds,
    data: "mujoco.MjData",
    palette: dict[str, tuple[float, float, float]],
    lookalikes: int,
    reset_space: tuple[np.ndarray, np.ndarray],
    max_tries: int = 300,
) -> Grounding:
    """Colours and lookalike placements for one reset (the real parts already placed in `data`).

    Every named part and every lookalike gets its own colour, so a colour word picks out
    one thing of its kind. A lookalike that finds no free spot in `max_tries` is dropped.
    """
    refs = REFERENTS.get(task, ())
    names = sorted(palette)
    order = [names[i] for i in rng.permutation(len(names))]
    colours = {ref.role: (order[i], tuple(float(c) for c in palette[order[i]])) for i, ref in enumerate(refs)}
    spare = order[len(refs):]
    free = {ref.role: len(ids.slots[ref.role]) for ref in refs}
    n = min(lookalikes, sum(free.values()), len(spare))
    boxes = []  # (xy centre, half size) of everything placed so far
    real_pos = {}
    for ref in refs:
        part = ids.real[ref.role]
        pos = data.site_xpos[part.sites[0]] if ref.is_site else data.xpos[part.root_body]
        real_pos[ref.role] = np.array(pos, float)
        boxes.append((real_pos[ref.role][:2], part.half_extent))
    placed: list[Lookalike] = []
    used = {ref.role: 0 for ref in refs}
    for k in range(n):
        open_refs = [r for r in refs if used[r.role] < free[r.role]]
        ref = open_refs[int(rng.integers(len(open_refs)))]
        slot = ids.slots[ref.role][used[ref.role]]
        lo, hi = _range(*reset_space, ref)
        for _ in range(max_tries):
            xyz = rng.uniform(lo, hi)
            if ref.reset_range == "object":
                xyz[2] = real_pos[ref.role][2]  # resting where the real one rests
            if not _overlaps(xyz[:2], slot.half_extent, boxes):
                break
        else:
            log.debug("no room for lookalike %d of %d (%s); dropped", k + 1, n, ref.role)
            continue
        boxes.append((xyz[:2], slot.half_extent))
        colour = spare[len(placed)]
        placed.append(Lookalike(ref.role, ref.shape, colour, tuple(float(c) for c in palette[colour]),
                                tuple(float(v) for v in xyz), used[ref.role]))
        used[ref.role] += 1
    return Grounding(colours, tuple(placed))


def apply_grounding(model: "mujoco.MjModel", ids: GroundingIds, grounding: Grounding | None) -> None:
    """Write colours and lookalike poses into the model; None hides every copy."""
    shown: dict[tuple[str, int], Lookalike] = {}
    if grounding is not None:
        for role, (_, rgb) in grounding.colours.items():
            part = ids.real[role]
            for s in part.sites:
                model.site_rgba[s] = (*rgb, 1.0)
            for g in part.coloured_geoms:
                model.geom_matid[g] = -1
                model.geom_rgba[g] = (*rgb, 1.0)
        shown = {(x.mimics, x.slot): x for x in grounding.lookalikes}
    for role, slots in ids.slots.items():
        for i, part in enumerate(slots):
            look = shown.get((role, i))
            if look is None:
                model.body_pos[part.root_body] = (0.0, 0.0, HIDDEN_Z)
                model.geom_group[part.geoms] = HIDDEN_GROUP
                continue
            model.body_pos[part.root_body] = look.pos
            model.geom_group[part.geoms] = part.groups
            for g in part.coloured_geoms:
                model.geom_matid[g] = -1
                model.geom_rgba[g] = (*look.rgb, 1.0)


# The roles whose colour word a colour swap may replace (dtp.experiments.colour_swap, grounding data).
SWAP_ROLES = ("task_object", "goal")


def swap_colour_word(instruction: str, old: str, new: str) -> str:
    """`instruction` with its one whole-word `old` colour replaced by `new` (InputError otherwise)."""
    pattern = rf"\b{re.escape(old)}\b"
    found = len(re.findall(pattern, instruction))
    if found != 1:
        raise InputError(f"the instruction {instruction!r} names {old!r} {found} times; the swap needs exactly one")
    return re.sub(pattern, new, instruction)
