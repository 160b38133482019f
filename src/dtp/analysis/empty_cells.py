"""Why a cell of the report's diagnostics table is empty, and which command fills it.

A '-' alone leaves a reader guessing whether DTP failed, the run skipped a measurement, or the
scene had nothing to measure. Each empty region cell gets a note saying which of these it is.
"""

from __future__ import annotations

import math
from typing import Any

# diagnostics (stats.step_diagnostics) that need ground-truth region scores, with the step field each reads
REGION_COLUMNS = {
    "task_pruned_share_of_firings": "d_on_task",
    "g_covers_task": "g_covers_task",
    "g_covers_object": "g_covers_object",
    "d_covers_distractors": "d_covers_distractors",
    "d_covers_lookalikes": "d_covers_lookalikes",
}
PRUNING_COLUMNS = ("task_pruned_share_of_firings", "d_covers_distractors", "d_covers_lookalikes")
# diagnostics over the steps where DTP fired
FIRING_COLUMNS = ("near_threshold_share_of_firings", "action_changed_share_when_fired", "mean_action_l2_when_fired")

NOTES = {
    "prunes_nothing": "this config prunes nothing (DTP off): no firing and no D to score",
    "no_capture": "this config ran without capture (DTP off and observe off, as `dtp demo` runs its baseline), "
                  "so it has no r, G or A; `dtp eval --out RUN` captures the baseline's maps too",
    "not_scored": "this run did not score regions (score_regions is false in its config.json, as in `dtp demo` "
                  "runs made before it scored them); `dtp eval --out RUN`, `dtp sweep` and `dtp demo` score them",
    "never_fired": "DTP never fired, so there is no firing to score",
    "no_distractors": "no distractor or lookalike was in view: the run has --distractors 0 (and no lookalikes); "
                      "`dtp eval --distractors 3` puts them in",
    "no_lookalikes": "the run's scenes hold no lookalikes (the plain variant, or --lookalikes 0); "
                     "`dtp eval --variant grounded` adds them",
    "not_visible": "that part was in view on none of the scored steps",
    "older_run": "scored by an older dtp that did not record this share; rerunning the config fills it",
}


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def empty_reason(column: str, config: str, run_config: dict[str, Any], steps: list[dict[str, Any]]) -> str | None:
    """The key in NOTES explaining why `column` is empty for `config`, given the run's config.json and
    that config's step rows; None for a column that needs no note."""
    cfg = run_config.get("configs", {}).get(config, {})
    enabled = bool(cfg.get("enabled", True))
    if column in FIRING_COLUMNS:
        return "prunes_nothing" if not enabled else "never_fired" if not any(s.get("fired") for s in steps) else None
    if column not in REGION_COLUMNS:
        return None
    if column in PRUNING_COLUMNS and not enabled:
        return "prunes_nothing"
    if not enabled and not run_config.get("observe", True):
        return "no_capture"
    if not run_config.get("score_regions", True):
        return "not_scored"
    if column == "task_pruned_share_of_firings" and not any(s.get("fired") for s in steps):
        return "never_fired"
    if column == "d_covers_lookalikes" and (run_config.get("variant", "plain") == "plain"
                                            or tuple(run_config.get("lookalikes") or (1, 1)) == (0, 0)):
        return "no_lookalikes"
    if column == "d_covers_distractors" and run_config.get("distractors", 1) == 0 and \
            not any(s.get("gt_lookalike_patches") for s in steps):
        return "no_distractors"
    field = REGION_COLUMNS[column]
    if steps and not any(field in s for s in steps):
        return "older_run"
    return "not_visible"


class NoteMarks:
    """Footnote letters for the notes a table uses, in order of first use."""

    def __init__(self) -> None:
        self.used: dict[str, str] = {}

    def cell(self, value: str, reason: str | None) -> str:
        """`value` unchanged, or '- (a)' with the note's letter when the cell is empty for a reason."""
        if reason is None or value != "-":
            return value
        letter = self.used.setdefault(reason, "abcdefghij"[len(self.used)])
        return f"- ({letter})"

    def lines(self) -> list[str]:
        return [f"({letter}) {NOTES[reason]}." for reason, letter in self.used.items()]


__all__ = ["FIRING_COLUMNS", "NOTES", "NoteMarks", "REGION_COLUMNS", "empty_reason"]
