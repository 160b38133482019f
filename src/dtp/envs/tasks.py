"""The benchmark's tasks: Meta-World v3 environments, their instructions and scene parts.

Each task names the Meta-World env it wraps, 3-5 instruction templates in a small
lower-case vocabulary (a word-level tokenizer is built from `all_instruction_words()`),
and which bodies/sites are the task object and the goal (for segmentation and for
keeping distractors clear of them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from dtp.envs.errors import UnknownTaskError


@dataclass(frozen=True)
class TaskSpec:
    """One task: Meta-World env id, instructions, and the scene parts that matter.

    object_bodies: bodies whose subtrees are the task object (segmentation label 1).
    keepout: (body, radius in m) discs on the table that distractors must stay clear of,
        besides Meta-World's object point, the goal and the hand (always kept clear).
    goal_site: the Meta-World site marking the goal, or None when it is not drawn.
    grounded_templates: instructions of the grounded variant; "{object}" and "{goal}" stand
        for the colour names of the task object and the goal marker.
    """

    name: str
    metaworld_id: str
    templates: tuple[str, ...]
    object_bodies: tuple[str, ...]
    keepout: tuple[tuple[str, float], ...]
    goal_site: str | None
    grounded_templates: tuple[str, ...] = ()


# Order is append-only: demo seeds are derived from a task's position in this table.
_TASK_LIST = (
    TaskSpec(
        name="reach",
        metaworld_id="reach-v3",
        templates=(
            "reach the red ball",
            "move the gripper to the red ball",
            "touch the red target with the gripper",
            "go to the red goal",
        ),
        object_bodies=(),
        keepout=(),
        goal_site="goal",
        grounded_templates=(
            "reach the {goal} ball",
            "move the gripper to the {goal} ball",
            "touch the {goal} target with the gripper",
            "go to the {goal} goal",
        ),
    ),
    TaskSpec(
        name="push",
        metaworld_id="push-v3",
        templates=(
            "push the puck to the goal",
            "slide the yellow puck onto the green target",
            "push the yellow puck to the green ball",
            "move the puck to the green goal",
        ),
        object_bodies=("obj",),
        keepout=(),
        goal_site="goal",
        grounded_templates=(
            "push the {object} puck to the {goal} goal",
            "slide the {object} puck onto the {goal} target",
            "push the {object} puck to the {goal} ball",
            "move the {object} puck to the {goal} goal",
        ),
    ),
    TaskSpec(
        name="pick-place",
        metaworld_id="pick-place-v3",
        templates=(
            "pick up the puck and place it at the goal",
            "put the yellow puck on the blue ball",
            "grasp the yellow puck and move it to the blue target",
            "lift the puck to the blue goal",
        ),
        object_bodies=("obj",),
        keepout=(),
        goal_site="goal",
        grounded_templates=(
            "pick up the {object} puck and place it at the {goal} goal",
            "put the {object} puck on the {goal} ball",
            "grasp the {object} puck and move it to the {goal} target",
            "lift the {object} puck to the {goal} goal",
        ),
    ),
    TaskSpec(
        name="button-press-topdown",
        metaworld_id="button-press-topdown-v3",
        templates=(
            "press the button",
            "push the red button down",
            "press down on the red button from above",
            "press the button on the yellow box",
        ),
        object_bodies=("button",),
        keepout=(("box", 0.15),),
        goal_site=None,
        grounded_templates=(
            "press the {object} button",
            "push the {object} button down",
            "press down on the {object} button from above",
            "press the {object} button on the box",
        ),
    ),
    TaskSpec(
        name="drawer-open",
        metaworld_id="drawer-open-v3",
        templates=(
            "open the drawer",
            "pull the drawer open",
            "grasp the handle and open the drawer",
            "pull the green drawer out by its handle",
        ),
        object_bodies=("drawer_link",),
        keepout=(("drawercase_link", 0.15),),
        goal_site="goal",
        grounded_templates=(
            "open the {object} drawer",
            "pull the {object} drawer open",
            "grasp the handle and open the {object} drawer",
            "pull the {object} drawer out by its handle",
        ),
    ),
)

TASKS: dict[str, TaskSpec] = {t.name: t for t in _TASK_LIST}
TASK_NAMES: tuple[str, ...] = tuple(TASKS)  # the Meta-World tasks, in table order: every command's default


def get_task(name: str) -> TaskSpec:
    """The spec of task `name`; raises UnknownTaskError listing the known tasks."""
    try:
        return TASKS[name]
    except KeyError:
        raise UnknownTaskError(name, list(TASKS)) from None


def task_index(name: str) -> int:
    """Fixed position of a task in the table (used to derive demonstration seeds)."""
    get_task(name)
    return list(TASKS).index(name)


def instruction_for(name: str, seed: int) -> str:
    """The instruction shown for a reset with `seed`: one template, chosen by the seed."""
    templates = get_task(name).templates
    return templates[_template_index(seed, len(templates))]


def _template_index(seed: int, n: int) -> int:
    """The template a reset with `seed` shows, of n (numpy imported here: the task table stays light to import)."""
    import numpy as np

    return int(np.random.default_rng([int(seed), 0x1D5]).integers(n))


def grounded_instruction_for(name: str, seed: int, colours: dict[str, str]) -> str:
    """The grounded variant's instruction for a reset with `seed`, naming `colours`.

    colours: role -> colour name ("task_object", "goal"). Same template choice by seed as
    `instruction_for`.
    """
    templates = get_task(name).grounded_templates
    template = templates[_template_index(seed, len(templates))]
    return template.format(object=colours.get("task_object", ""), goal=colours.get("goal", ""))


def all_instruction_words(colours: Iterable[str] = ()) -> list[str]:
    """Sorted list of every word any task instruction can use.

    Covers both variants' templates and every colour name of the registered variants'
    splits, plus `colours` (the names of a custom palette).
    """
    from dtp.envs.variants import all_colour_names

    words = {w for t in _TASK_LIST for tpl in t.templates for w in tpl.split()}
    words |= {w for t in _TASK_LIST for tpl in t.grounded_templates for w in tpl.split() if "{" not in w}
    return sorted(words | set(all_colour_names()) | {c.lower() for c in colours})
