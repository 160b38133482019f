"""The tables `dtp layers` and `dtp swap` print, from known results."""

from dtp.experiments.colour_swap import format_swap_summary
from dtp.experiments.layer_choice import LayerChoice, format_layer_choice


def test_layer_table_marks_the_best_row_and_lists_each_task():
    choice = LayerChoice(best=(1, 2), coverage={"early": 0.2, "middle": 0.6}, per_task={
        "reach": {"early": 0.1, "middle": 0.5}, "push": {"early": 0.3, "middle": 0.7}},
        candidates={"early": (0,), "middle": (1, 2)}, steps=40, chance=0.25,
        details={"relevance": "attention", "k": 0.25, "seed": 1}, named_coverage={"early": 0.15, "middle": 0.55})
    lines = format_layer_choice(choice, ["reach", "push"]).splitlines()
    assert lines[0] == ("share of task-object patches inside G (attention relevance, k=0.25, chance 0.25), "
                        "40 steps, seed set 1")
    assert lines[1].split() == ["layers", "reach", "push", "mean"]
    assert lines[2].split() == ["early", "0.100", "0.300", "0.200"]
    assert lines[3].split() == ["middle", "0.500", "0.700", "0.600", "<-", "best"]
    assert lines[4].endswith("inside G: early 0.150, middle 0.550")


def test_swap_lines_give_the_share_and_each_task():
    summary = {"moved": 3, "frames": 4, "ci95": [0.3, 0.95], "seed": 1,
               "per_task": {"push": {"moved": 2, "frames": 2}, "reach": {"moved": 1, "frames": 2}}}
    assert format_swap_summary(summary).splitlines() == [
        "G moved onto the lookalike when its colour word was named: 3/4 frames, 95% CI 0.30-0.95 (seed set 1)",
        "  push         2/2", "  reach        1/2"]
