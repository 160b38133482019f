"""dtp.experiments.colour_swap on a tiny random model: the plumbing, the swapped words, and `dtp swap`'s errors."""

import json

import pytest
import torch

from dtp.errors import InputError
from dtp.experiments.colour_swap import colour_swap, swap_colour_word
from dtp.envs.benchmark import benchmark_env
from dtp.models import load


def test_swap_replaces_the_one_whole_colour_word():
    assert swap_colour_word("push the red puck to the green goal", "red", "blue") == "push the blue puck to the green goal"
    with pytest.raises(InputError, match="0 times"):
        swap_colour_word("push the reddish puck", "red", "blue")
    with pytest.raises(InputError, match="2 times"):
        swap_colour_word("red puck to the red goal", "red", "blue")


def test_colour_swap_scores_fixed_frames(tiny_checkpoint):
    adapter = load(tiny_checkpoint)
    make = lambda t: benchmark_env(t, distractors=1, palette="train", image_size=96, variant="grounded",
                                   lookalikes=(1, 1))
    res = colour_swap(adapter, make, ["push", "reach"], episodes=2, seed=1)
    assert [(f.task, f.seed) for f in res.frames] == [("push", 1_010_000), ("push", 1_010_001),
                                                     ("reach", 1_010_000), ("reach", 1_010_001)]
    for f in res.frames:
        old, new = f.instruction.split(), f.swapped.split()
        diff = [(a, b) for a, b in zip(old, new) if a != b]
        assert len(old) == len(new) and len(diff) == 1 and diff[0][0] != diff[0][1]  # one colour word swapped
        assert f.g_original.shape == f.g_swapped.shape == f.named.shape == f.lookalike.shape
        assert f.named.any() and f.lookalike.any() and not (f.named & f.lookalike).all()
        assert f.g_original.dtype == torch.bool and f.g_original.any()
    # the model reads the words: different instructions give different G somewhere, else the test proves nothing
    assert any(not torch.equal(f.g_original, f.g_swapped) for f in res.frames)
    s = res.summary()
    assert s["frames"] == sum(f.score.moved is not None for f in res.frames)
    assert s["moved"] == sum(bool(f.score.moved) for f in res.frames)
    assert s["per_task"]["push"]["frames"] + s["per_task"]["reach"]["frames"] == s["frames"]
    assert s["ci95"][0] <= s["share"] <= s["ci95"][1]
    assert [(f.task, f.seed) for f in res.sample(3)] == [("push", 1_010_000), ("reach", 1_010_000), ("push", 1_010_001)]
    # same command, same numbers
    again = colour_swap(adapter, make, ["push", "reach"], episodes=2, seed=1)
    assert [f.row() for f in again.frames] == [f.row() for f in res.frames]


def test_cli_swap_json_and_figure(tiny_checkpoint, tmp_path, capsys):
    from dtp.cli import main

    png = tmp_path / "swap.png"
    assert main(["swap", "--model", str(tiny_checkpoint), "--tasks", "push", "--episodes", "1", "--json",
                 "--out", str(png)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(out[-1])
    assert summary["tasks"] == ["push"] and summary["seed"] == 1 and summary["episodes"] == 1
    assert png.stat().st_size > 0
    # G's size is DTP's --k: a smaller G is what can tell a named part from its lookalike
    assert main(["swap", "--model", str(tiny_checkpoint), "--tasks", "push", "--episodes", "1", "--json",
                 "--k", "4"]) == 0
    small = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["k"] == 0.25 and small["k"] == 4


@pytest.mark.parametrize("argv, needle", [
    (["--tasks", "no-such-task"], "no-such-task"),
    (["--out", "swap.txt"], "PNG"),
    (["--episodes", "0"], "episodes"),
    (["--k", "0"], "k"),
])
def test_cli_swap_errors(tiny_checkpoint, capsys, argv, needle):
    from dtp.cli import main

    try:
        code = main(["swap", "--model", str(tiny_checkpoint), *argv])
    except SystemExit as e:
        code = e.code
    err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
    assert code == 2 and len(err) == 1 and needle in err[0]
