"""OpenVLA specifics: sequence layout, OpenVLA's bin decoding and statistics, the opt-in remote-code loader.

The real OpenVLA code (timm towers, transformers 4.40) cannot run here; a stand-in with the
same module layout (tiny_prismatic.py) is used, also as the checkpoint's "remote code".
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import observation, tiny_openvla, word_tokenizer
from tiny_prismatic import TinyPrismaticProcessor

import dtp.models
from dtp.errors import CheckpointError, ConfigError
from dtp.models import wrap_model
from dtp.models.openvla import OPENVLA_PROMPT, OpenVLAAdapter, OpenVLABins

STATS = {"bridge": {"action": {"q01": [-2.0] * 6 + [0.0], "q99": [2.0] * 6 + [1.0], "mask": [True] * 6 + [False]}}}


def test_sequence_is_bos_patches_prompt(openvla):
    adapter = wrap_model(openvla.model, openvla.processor)
    assert isinstance(adapter, OpenVLAAdapter)
    inputs = adapter.prepare(observation())
    layout = inputs.layout
    n = (32 // 8) ** 2
    assert layout.grid == (4, 4)
    assert layout.image_positions.tolist() == list(range(1, 1 + n))
    words = openvla.processor.tokenizer.encode(OPENVLA_PROMPT.format(instruction="pick up the red block"), add_special_tokens=False)
    assert layout.seq_len == 1 + n + len(words)
    assert layout.prompt_positions.tolist() == list(range(1 + n, 1 + n + len(words)))
    embeds = inputs.model_inputs["inputs_embeds"]
    bos = openvla.model.language_model.get_input_embeddings()(torch.tensor([1]))
    assert torch.equal(embeds[0, 0], bos[0])


def test_openvla_bins_match_predict_action_math():
    v = 32000
    bins = OpenVLABins(vocab_size=v)
    edges = np.linspace(-1, 1, 256)
    centres = (edges[:-1] + edges[1:]) / 2
    ids = np.array([v - 1, v - 2, v - 128, v - 255, v - 256])
    # OpenVLA: discretized = vocab_size - id; centres[clip(discretized - 1, 0, 254)]
    assert bins.normalized(ids).tolist() == pytest.approx([centres[0], centres[1], centres[127], centres[254], centres[254]])
    stats = OpenVLABins(vocab_size=v, q01=(-2.0, 0.0), q99=(2.0, 1.0), mask=(True, False))
    a = stats(np.array([v - 1, v - 1]))
    assert a.tolist() == pytest.approx([0.5 * (centres[0] + 1) * 4 - 2, centres[0]])


def test_adapter_decodes_with_the_checkpoint_statistics():
    tiny = tiny_openvla(norm_stats=STATS)
    adapter = wrap_model(tiny.model, tiny.processor)
    v = 320  # 384 config ids minus pad_to_multiple_of 64
    assert adapter.actions.token_ids[0] == v - 1 and adapter.actions.token_ids[-1] == v - 256
    assert adapter.actions.n_tokens == 7 and adapter.unnorm_key == "bridge"
    gen = adapter.generate(adapter.prepare(observation()))
    action = adapter.decode(gen.action_bins)
    want = OpenVLABins(vocab_size=v, q01=tuple(STATS["bridge"]["action"]["q01"]), q99=tuple(STATS["bridge"]["action"]["q99"]),
                       mask=tuple(STATS["bridge"]["action"]["mask"]))(np.array(gen.extras["token_ids"]))
    assert action.tolist() == pytest.approx(want.tolist())
    assert np.all(np.abs(action[:6]) <= 2.0)  # scaled to [q01, q99]
    assert abs(action[6]) < 1.0  # mask False: the gripper stays normalised


def test_several_datasets_need_an_unnorm_key():
    two = {**STATS, "fractal": STATS["bridge"]}
    tiny = tiny_openvla(norm_stats=two)
    with pytest.raises(ConfigError, match="unnorm_key"):
        wrap_model(tiny.model, tiny.processor)
    with pytest.raises(ConfigError, match="nope"):
        wrap_model(tiny.model, tiny.processor, unnorm_key="nope")
    assert wrap_model(tiny.model, tiny.processor, unnorm_key="fractal").unnorm_key == "fractal"


def test_the_empty_token_is_appended_when_the_tokenizer_has_it(openvla):
    tok = word_tokenizer()
    tok.add_tokens(["▁"])
    empty = tok.convert_tokens_to_ids("▁")
    adapter = OpenVLAAdapter(openvla.model, TinyPrismaticProcessor(tok))
    assert adapter.empty_token_id == empty
    inputs = adapter.prepare(observation())
    assert inputs.layout.seq_len == 1 + 16 + len(tok.encode(OPENVLA_PROMPT.format(instruction="pick up the red block"), add_special_tokens=False)) + 1
    assert OpenVLAAdapter(openvla.model, openvla.processor).empty_token_id is None


def _save_checkpoint(tmp_path: Path, tiny) -> Path:
    d = tmp_path / "openvla-tiny"
    tiny.model.save_pretrained(d)
    tiny.processor.save_pretrained(d)
    shutil.copy(Path(__file__).with_name("tiny_prismatic.py"), d / "modeling_prismatic.py")
    cfg = json.loads((d / "config.json").read_text())
    cfg["auto_map"] = {"AutoConfig": "modeling_prismatic.TinyPrismaticConfig", "AutoModelForVision2Seq": "modeling_prismatic.TinyPrismatic"}
    (d / "config.json").write_text(json.dumps(cfg))
    return d


def test_loader_runs_checkpoint_code_only_when_trusted(tmp_path, openvla):
    d = _save_checkpoint(tmp_path, openvla)
    with pytest.raises(CheckpointError, match="trust_remote_code"):
        dtp.models.load(d)
    adapter = dtp.models.load(d, trust_remote_code=True, dtype=torch.float32)
    assert isinstance(adapter, OpenVLAAdapter)
    assert adapter.text_config._attn_implementation == "sdpa"
    ours = wrap_model(openvla.model, openvla.processor)
    obs = observation()
    assert adapter.generate(adapter.prepare(obs)).action_bins.tolist() == ours.generate(ours.prepare(obs)).action_bins.tolist()
    (d / "modeling_prismatic.py").unlink()
    with pytest.raises(CheckpointError, match="modeling_prismatic.py"):
        dtp.models.load(d, trust_remote_code=True)
