"""Loading local transformers checkpoints: the ordinary from_pretrained path, attention chosen for DTP."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_models import observation

import dtp.models
from dtp.errors import CheckpointError, UnsupportedModelError
from dtp.models import wrap_model
from dtp.models.generic import GenericVLAAdapter
from dtp.models.hf_loading import choose_attn_implementation, load_transformers_model
from dtp.models.paligemma import PaliGemmaAdapter


def _save(tmp_path, tiny, name, with_processor=True):
    d = tmp_path / name
    tiny.model.save_pretrained(d)
    if with_processor:
        tiny.processor.save_pretrained(d)
    return d


def test_attention_choice(paligemma2, llava, qwen2_5_vl):
    assert choose_attn_implementation(paligemma2.model.config) == "eager"  # Gemma2 soft-caps
    assert choose_attn_implementation(llava.model.config) == "sdpa"
    assert choose_attn_implementation(qwen2_5_vl.model.config) == "sdpa"


@pytest.mark.parametrize("name,cls,impl", [("llava", GenericVLAAdapter, "sdpa"), ("paligemma2", PaliGemmaAdapter, "eager")])
def test_load_a_saved_checkpoint_and_wrap_it(request, tmp_path, name, cls, impl):
    tiny = request.getfixturevalue(name)
    d = _save(tmp_path, tiny, name)
    adapter = dtp.models.load(d)
    assert type(adapter) is cls
    assert adapter.text_config._attn_implementation == impl
    assert not adapter.model.training
    ours = wrap_model(tiny.model, tiny.processor)
    obs = observation()
    a, b = adapter.generate(adapter.prepare(obs)), ours.generate(ours.prepare(obs))
    assert a.action_bins.tolist() == b.action_bins.tolist()
    assert torch.allclose(a.action_logits, b.action_logits, atol=1e-5)


def test_load_without_a_processor_returns_none_and_wrap_says_so(tmp_path, qwen2_5_vl):
    d = _save(tmp_path, qwen2_5_vl, "qwen", with_processor=False)
    model, processor = load_transformers_model(d)
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration" and processor is None
    assert model.config.text_config._attn_implementation == "sdpa"
    with pytest.raises(UnsupportedModelError, match="processor"):
        dtp.models.load(d)


def test_missing_or_foreign_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="config.json"):
        load_transformers_model(tmp_path)
    with pytest.raises(CheckpointError):
        dtp.models.load(tmp_path / "nowhere")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(CheckpointError, match="bert"):
        dtp.models.load(tmp_path)
