"""Task table, instructions and vocabulary (no simulator needed)."""

import re

import pytest

from dtp.envs import TASKS, UnknownTaskError, all_instruction_words, get_task
from dtp.envs.tasks import instruction_for

REQUIRED = {"reach", "push", "pick-place", "button-press-topdown", "drawer-open"}


def test_required_tasks_with_three_to_five_templates():
    assert REQUIRED <= set(TASKS)
    for spec in TASKS.values():
        assert 3 <= len(spec.templates) <= 5
        assert spec.metaworld_id == spec.name + "-v3"


def test_vocabulary_is_lower_case_words_and_covers_every_template():
    words = all_instruction_words()
    assert words == sorted(set(words))
    assert all(re.fullmatch(r"[a-z]+", w) for w in words)
    for spec in TASKS.values():
        for tpl in spec.templates:
            assert set(tpl.split()) <= set(words)


def test_instruction_is_chosen_by_seed():
    assert instruction_for("push", 3) == instruction_for("push", 3)
    chosen = {instruction_for("push", s) for s in range(40)}
    assert chosen == set(TASKS["push"].templates)


def test_unknown_task_error_lists_known_tasks():
    with pytest.raises(UnknownTaskError) as err:
        get_task("push-v3")
    assert isinstance(err.value, ValueError)
    for name in REQUIRED:
        assert name in str(err.value)
