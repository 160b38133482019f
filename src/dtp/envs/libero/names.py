"""LIBERO task names: "<suite>/<index>" for one task, "<suite>" for all of a suite's tasks.

The syntax check is light (no LIBERO import), so the command line can validate names at once;
`expand` and `available_suites` import LIBERO and check that a suite's files are all present
(LIBERO-PRO lists 83 suites, of which only some ship every BDDL and initial-state file).
"""

from __future__ import annotations

import os
from typing import Iterable

from ...errors import ConfigError, did_you_mean

PREFIX = "libero_"
STATES_PER_TASK = 50  # LIBERO's fixed initial states per task: the field's test scenes

# Episode limits of the field (openpi's and vla-eval's LIBERO clients); a perturbed suite
# ("libero_object_with_mug") takes its base suite's.
MAX_STEPS = {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520, "libero_90": 400}
DEFAULT_MAX_STEPS = 300


def is_libero(name: str) -> bool:
    """Whether `name` names a LIBERO suite or task (rather than a Meta-World task)."""
    return name.startswith(PREFIX)


def split_name(name: str) -> tuple[str, int | None]:
    """("libero_object", 3) for "libero_object/3"; ("libero_object", None) for a whole suite."""
    suite, sep, index = name.partition("/")
    if not is_libero(suite) or not suite[len(PREFIX):]:
        raise ConfigError(f"not a LIBERO task name: {name!r}; use <suite>/<index>, e.g. libero_object/3")
    if not sep:
        return suite, None
    if not index.isdigit():
        raise ConfigError(f"LIBERO task {name!r}: the part after '/' must be a task index, e.g. {suite}/3")
    return suite, int(index)


def max_steps_for(suite: str) -> int:
    """The field's episode limit for `suite` (its base suite's for a perturbed variant)."""
    base = max((b for b in MAX_STEPS if suite == b or suite.startswith(b + "_")), key=len, default=None)
    return MAX_STEPS[base] if base else DEFAULT_MAX_STEPS


ARENA_FIXTURES = ("table", "floor", "kitchen_table", "living_room_table", "study_table", "main_table")


def _suite_complete(suite_obj) -> bool:
    """Every task's BDDL file, initial-state file and object models exist in the installed package
    (LIBERO-PRO lists suites whose object meshes it does not ship)."""
    import contextlib
    import io

    from libero.libero import get_libero_path
    from libero.libero.envs import bddl_utils
    from libero.libero.envs.objects import get_object_fn

    bddl_root, init_root = get_libero_path("bddl_files"), get_libero_path("init_states")
    if suite_obj.n_tasks == 0:  # libero_100 is listed with no tasks
        return False
    for i in range(suite_obj.n_tasks):
        task = suite_obj.get_task(i)
        if not os.path.exists(os.path.join(bddl_root, task.problem_folder, task.bddl_file)):
            return False
        init = os.path.join(init_root, task.problem_folder, task.init_states_file)
        if not (os.path.exists(init) or os.path.exists(init + ".npz")):  # LIBERO-PRO ships them as NPZ (no pickle)
            return False
        problem = bddl_utils.robosuite_parse_problem(os.path.join(bddl_root, task.problem_folder, task.bddl_file))
        for category in {*problem["objects"], *problem["fixtures"]} - set(ARENA_FIXTURES):
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    get_object_fn(category)(name="probe")  # parses the object's model files
            except (OSError, KeyError):
                return False
    return True


def load_suite(suite: str):
    """LIBERO's benchmark object for `suite`; a ConfigError names the problem (missing extra, unknown
    suite, suite whose files the installed package lacks)."""
    try:
        from libero.libero import benchmark
    except ImportError as e:
        raise ConfigError(
            f"LIBERO task {suite!r} needs the libero extra: pip install 'dtp[libero]' ({e})"
        ) from None
    suites = benchmark.get_benchmark_dict()
    if suite not in suites:
        raise ConfigError(f"unknown LIBERO suite {suite!r}{did_you_mean(suite, suites)}; see docs/libero.md")
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # the constructor prints its task order
        suite_obj = suites[suite]()
    if not _suite_complete(suite_obj):
        raise ConfigError(
            f"LIBERO suite {suite!r} is listed but the installed package lacks some of its files "
            "(BDDL or initial states); docs/libero.md lists the complete suites"
        )
    return suite_obj


def expand(names: Iterable[str]) -> list[str]:
    """Task names with each whole suite replaced by its tasks ("libero_object" -> libero_object/0..9);
    checks suites and indices against the installed package."""
    out: list[str] = []
    for name in names:
        suite, index = split_name(name)
        suite_obj = load_suite(suite)
        if index is None:
            out.extend(f"{suite}/{i}" for i in range(suite_obj.n_tasks))
        elif not 0 <= index < suite_obj.n_tasks:
            raise ConfigError(f"LIBERO task {name!r}: {suite} has tasks 0..{suite_obj.n_tasks - 1}")
        else:
            out.append(name)
    return out


def available_suites() -> list[str]:
    """The suites the installed LIBERO package lists whose files are all present."""
    from libero.libero import benchmark

    out = []
    for suite in sorted(benchmark.get_benchmark_dict()):
        try:
            load_suite(suite)
        except Exception:  # incomplete suites raise ConfigError; a few listed ones fail to construct at all
            continue
        out.append(suite)
    return out
