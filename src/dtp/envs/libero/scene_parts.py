"""Which LIBERO body is which scene part: task objects and targets from the BDDL goal, the robot arm,
the gripper, the other objects (distractors) and the object a `_with_*` suite added.

A body belongs to the object or fixture whose instance name is its name's longest prefix
("libero_mug_yellow_1_handle" -> "libero_mug_yellow_1"), to the gripper ("gripper0_*") or to the
arm ("robot0_*", "mount0_*"); bodies that match nothing inherit their parent's part. Fixtures that
the goal does not name (table, floor, cabinets, stove) are background, like Meta-World's table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..scene import Scene, SceneObject

# The same numbers as dtp.regions.SEGMENTATION_LABELS (a test checks), kept here so that the env
# needs no torch.
LABELS = {"background": 0, "task_object": 1, "goal": 2, "gripper": 3, "distractor": 4, "robot": 6, "added": 7}
ARENA = ("main_table", "floor", "table")  # goal regions on these are places on the table, not objects


@dataclass(frozen=True)
class SceneParts:
    """Instance names by role, read once from a task's parsed BDDL."""

    task_objects: tuple[str, ...]
    goals: tuple[str, ...]
    distractors: tuple[str, ...]
    added: tuple[str, ...]
    fixtures: tuple[str, ...]
    categories: dict[str, str]  # instance -> object category ("ketchup_1" -> "ketchup")

    def role_of(self, instance: str) -> str | None:
        for role, names in (("task_object", self.task_objects), ("goal", self.goals),
                            ("added", self.added), ("distractor", self.distractors)):
            if instance in names:
                return role
        return None

    def scene(self, model, data, *, variant: str, split: str, seed: int, instruction: str) -> Scene:
        """The `Scene` of the current model: named objects, then the gripper and the robot arm."""
        owners = body_owners(model, self)
        objects = []
        for name in (*self.task_objects, *self.goals, *self.added, *self.distractors):
            bodies = tuple(int(b) for b in np.flatnonzero(owners == name))
            objects.append(_scene_object(model, data, name, self.role_of(name), self.categories.get(name, name), bodies))
        for part in ("gripper", "robot"):
            bodies = tuple(int(b) for b in np.flatnonzero(owners == part))
            objects.append(_scene_object(model, data, part, part, part, bodies))
        return Scene(variant=variant, split=split, seed=seed, instruction=instruction, objects=tuple(objects))


def _scene_object(model, data, name: str, role: str, shape: str, bodies: tuple[int, ...]) -> SceneObject:
    geoms = tuple(int(g) for g in np.flatnonzero(np.isin(model.geom_bodyid, bodies)))
    sites = tuple(int(s) for s in np.flatnonzero(np.isin(model.site_bodyid, bodies)))
    pos = tuple(float(v) for v in data.xpos[bodies[0]]) if bodies else (float("nan"),) * 3
    return SceneObject(name=name, role=role, shape=shape, colour=None, rgb=None, pos=pos, mimics=None,
                       body_ids=bodies, geom_ids=geoms, site_ids=sites)


def _owner(name: str, instances: list[str]) -> str | None:
    """The instance whose name is the longest prefix of `name` (followed by '_'), if any."""
    best = None
    for inst in instances:
        if (name == inst or name.startswith(inst + "_")) and (best is None or len(inst) > len(best)):
            best = inst
    return best


def scene_parts(parsed_problem: dict, suite: str) -> SceneParts:
    """Roles of a task's instances: the goal's first arguments are task objects, its second
    arguments' owners goals; a `<suite>_with_<thing>` suite's objects whose category holds every
    word of <thing> are the added distractor; other movable objects are distractors."""
    objects = {inst: cat for cat, insts in parsed_problem["objects"].items() for inst in insts}
    fixtures = {inst: cat for cat, insts in parsed_problem.get("fixtures", {}).items() for inst in insts}
    instances = [*objects, *fixtures]
    task_objects: list[str] = []
    goals: list[str] = []
    for predicate in parsed_problem["goal_state"]:
        args = [a for a in predicate[1:] if isinstance(a, str)]
        for i, arg in enumerate(args):
            owner = _owner(arg, instances)
            if owner is None or owner in ARENA or fixtures.get(owner) in ARENA:
                continue
            (task_objects if i == 0 else goals).append(owner)
    task_objects = list(dict.fromkeys(task_objects))
    goals = [g for g in dict.fromkeys(goals) if g not in task_objects]
    added: list[str] = []
    if "_with_" in suite:
        words = set(suite.split("_with_", 1)[1].split("_"))
        added = [i for i, cat in objects.items() if words <= set(cat.split("_")) and i not in task_objects + goals]
    named = set(task_objects) | set(goals) | set(added)
    distractors = [i for i in objects if i not in named]
    return SceneParts(tuple(task_objects), tuple(goals), tuple(distractors), tuple(added),
                      tuple(fixtures), {**objects, **fixtures})


def body_owners(model, parts: SceneParts) -> np.ndarray:
    """(nbody,) object: the instance, "gripper", "robot" or "" (background) each body belongs to."""
    instances = [*parts.categories]
    owners = np.full(model.nbody, "", dtype=object)
    for b in range(model.nbody):
        name = model.body(b).name
        if name.startswith("gripper0_"):
            owners[b] = "gripper"
        elif name.startswith(("robot0_", "mount0_")):
            owners[b] = "robot"
        else:
            owners[b] = _owner(name, instances) or ""
        if not owners[b] and b > 0:
            owners[b] = owners[model.body_parentid[b]]  # children come after their parents
    return owners


def label_tables(model, parts: SceneParts) -> np.ndarray:
    """(ngeom,) uint8: the segmentation label of each geom of `model`."""
    owners = body_owners(model, parts)
    body_labels = np.zeros(model.nbody, dtype=np.uint8)
    for b, owner in enumerate(owners):
        role = owner if owner in ("gripper", "robot") else parts.role_of(owner)
        body_labels[b] = LABELS.get(role, 0) if role else 0
    return body_labels[model.geom_bodyid]
