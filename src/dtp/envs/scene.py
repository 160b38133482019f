"""What a reset put in the scene, object by object, with the model ids segmentation needs.

`MetaWorldEnv.scene` returns a `Scene` after every reset: the task object, the goal marker,
the gripper, each lookalike and each generic distractor, with colour names (grounded
variant), positions and body/geom/site ids. `MetaWorldEnv.instance_segmentation()` maps
pixels to indices into `Scene.objects`, so question-answer data and scoring can tell a
lookalike from the object it copies.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

ROLES = ("task_object", "goal", "gripper", "lookalike", "distractor", "robot", "added")
# robot: the arm's own bodies (LIBERO); added: a distractor that a perturbed suite added (LIBERO's _with_* suites)


@dataclass(frozen=True)
class SceneObject:
    """One thing in the scene.

    name: unique in the scene ("task_object", "goal", "gripper", "lookalike_0", "distractor_0").
    role: one of ROLES.
    shape: "puck", "ball", "button", "drawer" (task parts and their lookalikes), "gripper",
        or the primitive of a generic distractor ("box", "sphere", ...).
    colour, rgb: the colour's name and RGB in [0, 1]; None where the scene does not name it
        (plain variant task parts, the gripper).
    pos: world position of the object's root (the site for a goal marker), metres.
    mimics: for a lookalike, the role it copies ("task_object" or "goal"); else None.
    body_ids, geom_ids, site_ids: MuJoCo ids of the parts drawn for it.
    """

    name: str
    role: str
    shape: str
    colour: str | None
    rgb: tuple[float, float, float] | None
    pos: tuple[float, float, float]
    mimics: str | None
    body_ids: tuple[int, ...]
    geom_ids: tuple[int, ...]
    site_ids: tuple[int, ...]


@dataclass(frozen=True)
class Scene:
    """Everything one reset placed: variant, split, seed, instruction and objects."""

    variant: str
    split: str
    seed: int
    instruction: str
    objects: tuple[SceneObject, ...]

    def by_role(self, role: str) -> list[SceneObject]:
        return [o for o in self.objects if o.role == role]

    def get(self, name: str) -> SceneObject:
        for o in self.objects:
            if o.name == name:
                return o
        raise KeyError(f"no object {name!r} in the scene; have {[o.name for o in self.objects]}")

    @property
    def task_object(self) -> SceneObject | None:
        found = self.by_role("task_object")
        return found[0] if found else None

    @property
    def goal(self) -> SceneObject | None:
        found = self.by_role("goal")
        return found[0] if found else None

    @property
    def lookalikes(self) -> list[SceneObject]:
        return self.by_role("lookalike")

    @property
    def distractors(self) -> list[SceneObject]:
        return self.by_role("distractor")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (lists instead of tuples)."""
        return {
            "variant": self.variant,
            "split": self.split,
            "seed": self.seed,
            "instruction": self.instruction,
            "objects": [
                {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(o).items()} for o in self.objects
            ],
        }
