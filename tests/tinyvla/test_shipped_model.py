"""The checkpoint that ships in the package: loads offline, is small, and carries its chosen layers."""

import json

import numpy as np
import pytest

from dtp.config import DTPConfig
from dtp.errors import CheckpointError
from dtp.models import load, shipped_model_path
from dtp.policy import DTPPolicy
from dtp.tinyvla.modeling import DEFAULT_LAYERS_KEY, MODEL_TYPE


def test_shipped_checkpoint_files_and_size():
    d = shipped_model_path()
    names = {p.name for p in d.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "training.json"} <= names
    assert not any(n.endswith((".bin", ".pt", ".pkl")) for n in names)  # never pickles
    assert sum(p.stat().st_size for p in d.iterdir()) < 20 * 2**20
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["model_type"] == MODEL_TYPE
    training = json.loads((d / "training.json").read_text())
    assert training["config"]["steps"] == training["curve"]["train"][-1]["step"]


def test_shipped_names_and_the_variant_the_model_was_trained_on():
    assert shipped_model_path("tinyvla-plain") == shipped_model_path()  # until the grounded model ships
    plain = load("tinyvla-plain")
    assert plain.benchmark_variant == "plain" and load("tinyvla").benchmark_variant == "plain"
    with pytest.raises(CheckpointError, match="no shipped model named 'tinyvla-grounded'"):
        shipped_model_path("tinyvla-grounded")


def test_shipped_model_acts_with_its_stored_relevance_layers():
    adapter = load("tinyvla")
    stored = json.loads((shipped_model_path() / "config.json").read_text())["extra"][DEFAULT_LAYERS_KEY]
    policy = DTPPolicy(adapter, DTPConfig())
    assert policy.relevance_layers == tuple(stored)
    rng = np.random.default_rng(0)
    obs = {
        "image": rng.integers(0, 256, (96, 96, 3), dtype=np.uint8),
        "instruction": "push the yellow puck to the green ball",
        "proprio": np.zeros(4, dtype=np.float32),
    }
    res = policy.step(obs)
    assert res.action.shape == (4,) and np.all(np.abs(res.action) <= 1.0)
    assert res.record.n_region == 16
