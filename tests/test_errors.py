"""Bad input gets one clear exception each."""

import math

import numpy as np
import pytest
import torch

from dtp import core
from dtp.config import DTPConfig
from dtp.errors import AttentionError, CheckpointError, ConfigError, InputError, LayoutError
from dtp.models.base import TokenLayout
from dtp.policy import DTPPolicy


@pytest.mark.parametrize(
    "image,match",
    [
        (np.zeros((48, 48), np.uint8), r"\(H, W, 3\)"),
        (np.zeros((48, 48, 4), np.uint8), r"\(H, W, 3\)"),
        (np.zeros((48, 48, 3), np.float32), "uint8"),
        (np.zeros((64, 64, 3), np.uint8), "48x48"),
        ([[0]], "numpy array"),
    ],
)
def test_bad_images(tiny_adapter, tiny_obs, image, match):
    with pytest.raises(InputError, match=match):
        DTPPolicy(tiny_adapter).step({**tiny_obs, "image": image})


@pytest.mark.parametrize("instruction", ["", "   "])
def test_empty_instruction(tiny_adapter, tiny_obs, instruction):
    with pytest.raises(InputError, match="instruction is empty"):
        DTPPolicy(tiny_adapter).step({**tiny_obs, "instruction": instruction})


def test_wrong_proprio(tiny_adapter, tiny_obs):
    with pytest.raises(InputError, match="proprio"):
        DTPPolicy(tiny_adapter).step({**tiny_obs, "proprio": np.zeros(7)})


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"tau": -1.0}, "tau"),
        ({"tau": math.nan}, "tau"),
        ({"k": 0}, "k as a count"),
        ({"k": 1.5}, "fraction"),
        ({"k": True}, "k must be"),
        ({"sigma": -1}, "sigma"),
        ({"relevance": "gradcam"}, "relevance"),
        ({"aggregation": "median"}, "aggregation"),
        ({"ablation": "dropout"}, "ablation"),
        ({"relevance_layers": ()}, "at least one"),
    ],
)
def test_bad_config(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        DTPConfig(**kwargs)


def test_k_larger_than_image_tokens(tiny_adapter, tiny_obs):
    with pytest.raises(ConfigError, match="number of image tokens"):
        DTPPolicy(tiny_adapter, DTPConfig(k=10_000)).step(tiny_obs)


def test_layers_out_of_range(tiny_adapter):
    with pytest.raises(ConfigError, match="out of range"):
        DTPPolicy(tiny_adapter, DTPConfig(relevance_layers=(0, 7)))


def test_no_image_tokens():
    with pytest.raises(LayoutError, match="no image tokens"):
        TokenLayout(image_positions=torch.tensor([], dtype=torch.long), grid=(0, 0),
                    prompt_positions=torch.tensor([3]), seq_len=4)


def test_nan_attention_rows():
    rows = torch.full((2, 2, 3, 4), math.nan)
    with pytest.raises(AttentionError, match="NaN"):
        core.attention_map(rows, (2, 2))


def test_missing_and_foreign_checkpoints(tmp_path):
    from dtp.models import load

    with pytest.raises(CheckpointError, match="no checkpoint"):
        load(tmp_path / "nothing")
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(CheckpointError, match="bert"):
        load(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load(tmp_path)


def test_corrupt_tinyvla_weights(tmp_path, tiny_adapter):
    from dtp.models import load
    from dtp.tinyvla import save_tokenizer

    tiny_adapter.model.save_pretrained(tmp_path)
    save_tokenizer(tiny_adapter.tokenizer, tmp_path)
    assert load(tmp_path).num_layers == 3  # round trip works
    (tmp_path / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="corrupt"):
        load(tmp_path)
