"""Choosing relevance layers by G's coverage of the task objects, and storing them with a checkpoint."""

import json
import math

import pytest
import torch

from dtp.config import DTPConfig
from dtp.envs import make_env
from dtp.errors import CheckpointError, ConfigError
from dtp.experiments.layer_choice import choose_layers, coverage_by_layers, layer_candidates
from dtp.seeds import EVAL_SEED_BASE, validation_seeds
from dtp.models import load
from dtp.policy import DTPPolicy
from dtp.tinyvla.modeling import DEFAULT_LAYERS_KEY, write_default_relevance_layers


def test_candidates_cover_singles_pairs_default_and_all():
    c = layer_candidates(4)
    assert [c[str(l)] for l in range(4)] == [(0,), (1,), (2,), (3,)]
    assert c["2,3"] == (2, 3) and c["0,1,2,3"] == (0, 1, 2, 3)
    assert DTPConfig().resolve_layers(4) in c.values()
    assert layer_candidates(1) == {"0": (0,)}
    with pytest.raises(ConfigError):
        layer_candidates(0)


def test_validation_seeds_are_not_the_test_seeds():
    assert validation_seeds(3) == [EVAL_SEED_BASE + 10_000 + i for i in range(3)]
    assert set(validation_seeds(50)).isdisjoint(validation_seeds(50, seed=0))


def test_coverage_known_answer_on_hand_made_rows():
    """Layer 0 looks at the task block, layer 1 at the opposite corner: coverage 1 and 0."""
    grid = (4, 4)
    task = torch.zeros(grid, dtype=torch.bool)
    task[:2, :2] = True  # 4 task patches
    rows = torch.full((2, 1, 3, 16), 0.01)
    rows[0, :, :, [0, 1, 4, 5]] = 1.0  # layer 0 -> top-left block
    rows[1, :, :, [10, 11, 14, 15]] = 1.0  # layer 1 -> bottom-right block
    cand = {"0": (0,), "1": (1,), "0,1": (0, 1)}
    cov = coverage_by_layers(rows, grid, task, cand, k=4, sigma=0.0)
    assert cov["0"] == 1.0 and cov["1"] == 0.0
    assert 0.0 <= cov["0,1"] <= 1.0
    none_visible = coverage_by_layers(rows, grid, torch.zeros(grid, dtype=torch.bool), cand, k=4, sigma=0.0)
    assert all(math.isnan(v) for v in none_visible.values())


def test_coverage_similarity_mode_uses_hidden_states():
    grid = (2, 2)
    task = torch.tensor([[True, False], [False, False]])
    prompt = torch.tensor([[[1.0, 0.0]]])  # (L=1, P=1, D=2)
    image = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [-1.0, 0.0]]])  # patch 0 matches the prompt
    rows = torch.zeros(1, 1, 1, 4)  # attention says nothing
    cov = coverage_by_layers(rows, grid, task, {"0": (0,)}, k=1, sigma=0.0, prompt_hidden=prompt, image_hidden=image)
    assert cov["0"] == 1.0


def test_resolve_layers_prefers_explicit_then_model_default_then_middle_third():
    assert DTPConfig().resolve_layers(6) == (2, 3)
    assert DTPConfig().resolve_layers(6, (5,)) == (5,)
    assert DTPConfig(relevance_layers=(1,)).resolve_layers(6, (5,)) == (1,)
    with pytest.raises(ConfigError):
        DTPConfig().resolve_layers(4, (7,))
    with pytest.raises(ConfigError):
        DTPConfig().resolve_layers(4, ())


def test_stored_default_reaches_the_policy(tiny_checkpoint, tmp_path):
    import shutil

    ck = tmp_path / "ck"
    shutil.copytree(tiny_checkpoint, ck)
    assert DTPPolicy(load(ck)).relevance_layers == DTPConfig().resolve_layers(2)
    write_default_relevance_layers(ck, (1,))
    assert json.loads((ck / "config.json").read_text())["extra"][DEFAULT_LAYERS_KEY] == [1]
    adapter = load(ck)
    assert adapter.default_relevance_layers == (1,)
    assert DTPPolicy(adapter).relevance_layers == (1,)
    assert DTPPolicy(adapter, DTPConfig(relevance_layers=(0,))).relevance_layers == (0,)
    with pytest.raises(CheckpointError, match="out of range"):
        write_default_relevance_layers(ck, (2,))
    with pytest.raises(CheckpointError):
        write_default_relevance_layers(tmp_path / "nothing", (0,))


def test_choose_layers_end_to_end_on_short_rollouts(tiny_checkpoint):
    adapter = load(tiny_checkpoint)
    choice = choose_layers(adapter, lambda t: make_env(t, max_steps=3), ["reach"], episodes=1, progress=False)
    assert choice.steps == 3
    assert choice.best in choice.candidates.values()
    assert all(0.0 <= v <= 1.0 for v in choice.coverage.values())
    assert choice.chance == pytest.approx(16 / 64)
    assert choice.coverage[",".join(map(str, choice.best))] == max(choice.coverage.values())
    # the instruction's parts alone (reach: the goal), beside the task region with the gripper
    assert set(choice.named_coverage) == set(choice.candidates)
    assert all(0.0 <= v <= 1.0 for v in choice.named_coverage.values())
    assert choice.to_dict()["named_coverage"] == choice.named_coverage
    with pytest.raises(ConfigError):
        choose_layers(adapter, make_env, ["reach"], episodes=0)
    with pytest.raises(ConfigError):
        choose_layers(adapter, make_env, ["reach"], relevance="gradients")
    with pytest.raises(ConfigError):
        choose_layers(adapter, make_env, ["reach"], sigma=-1.0)
