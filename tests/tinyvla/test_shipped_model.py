"""The checkpoint that ships in the package: loads offline, is small, and carries its chosen layers."""

import json
from pathlib import Path

import numpy as np
import pytest

from dtp.config import DTPConfig
from dtp.errors import CheckpointError
from dtp.models import load, shipped_model_path
from dtp.policy import DTPPolicy
from dtp.tinyvla.modeling import DEFAULT_LAYERS_KEY, MODEL_TYPE

FIGURES = Path(__file__).parent / "fixtures" / "shipped_figures.json"


@pytest.mark.parametrize("name", ["tinyvla", "tinyvla-plain", "tinyvla-libero"])
def test_shipped_checkpoint_files_and_size(name):
    d = shipped_model_path(name)
    names = {p.name for p in d.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "training.json"} <= names
    assert not any(n.endswith((".bin", ".pt", ".pkl")) for n in names)  # never pickles
    assert sum(p.stat().st_size for p in d.iterdir()) < 20 * 2**20
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["model_type"] == MODEL_TYPE
    training = json.loads((d / "training.json").read_text())
    assert training["config"]["steps"] == training["curve"]["train"][-1]["step"]


def test_shipped_names_and_the_variant_the_model_was_trained_on():
    assert shipped_model_path("tinyvla-plain") != shipped_model_path()
    assert load("tinyvla-plain").benchmark_variant == "plain"
    assert load("tinyvla").benchmark_variant == "grounded"
    assert load("tinyvla-libero").benchmark_variant == "libero"
    with pytest.raises(CheckpointError, match="no shipped model named 'tinyvla-grounded'"):
        shipped_model_path("tinyvla-grounded")


@pytest.mark.parametrize("name, size, instruction, dims", [
    ("tinyvla", 96, "push the yellow puck to the green ball", (4, 4)),
    ("tinyvla-plain", 96, "push the yellow puck to the green ball", (4, 4)),
    ("tinyvla-libero", 128, "pick up the alphabet soup and place it in the basket", (8, 7)),
])
def test_shipped_model_acts_with_its_stored_relevance_layers(name, size, instruction, dims):
    adapter = load(name)
    stored = json.loads((shipped_model_path(name) / "config.json").read_text())["extra"][DEFAULT_LAYERS_KEY]
    policy = DTPPolicy(adapter, DTPConfig())
    assert policy.relevance_layers == tuple(stored)
    rng = np.random.default_rng(0)
    obs = {
        "image": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
        "instruction": instruction,
        "proprio": np.zeros(dims[0], dtype=np.float32),
    }
    res = policy.step(obs)
    assert res.action.shape == (dims[1],) and np.all(np.abs(res.action) <= 1.0)
    assert res.record.n_region == 16  # 25% of the 8 x 8 patch grid


def test_shipped_grounded_model_g_follows_the_colour_word_on_fixed_frames():
    """Ten fixed validation frames (seed set 1, reach and pick-place, the first frame of each): with a
    small G (k = 2 patches), swapping the named colour for a lookalike's moves G onto the lookalike for
    the grounded model and never for the plain one. The counts are compared with the stored
    measurement (fixtures/shipped_figures.json): the scenes exactly, the moved frames within its
    stated tolerance (float differences between machines can flip a near tie)."""
    from dtp.envs.benchmark import benchmark_env
    from dtp.experiments.colour_swap import colour_swap

    stored = json.loads(FIGURES.read_text())["colour_swap_k2"]

    def make(task):
        return benchmark_env(task, distractors=3, palette="train", image_size=96, variant="grounded")

    measured = {}
    for name, expected in stored["moved"].items():
        res = colour_swap(load(name), make, ["reach", "pick-place"], episodes=5, seed=1, config=DTPConfig(k=2))
        scored = [f for f in res.frames if f.score.moved is not None]
        assert len(res.frames) == stored["frames"] and len(scored) == stored["scored"]
        measured[name] = sum(bool(f.score.moved) for f in scored)
        assert abs(measured[name] - expected) <= stored["tolerance_moved"], (name, measured[name], expected)
    assert measured["tinyvla"] > measured["tinyvla-plain"]  # the finding itself, whatever the tolerance
