"""The generic adapter's boundary: clear errors for what cannot be supported, and the action vocabulary."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from tiny_models import observation

from dtp.actions import ActionBinner
from dtp.errors import InputError, LayoutError, UnsupportedModelError
from dtp.models import wrap_model
from dtp.models.base import Observation
from dtp.models.generic import ActionDecodingError, ActionVocab, GenericVLAAdapter, greedy_decode


def test_a_text_only_model_has_no_image_token():
    from transformers import LlamaConfig, LlamaForCausalLM

    lm = LlamaForCausalLM(LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=2))
    with pytest.raises(UnsupportedModelError):
        wrap_model(lm, object())


def test_missing_image_token_id_is_named(llava):
    model = copy.deepcopy(llava.model)
    model.config.image_token_id = None
    with pytest.raises(UnsupportedModelError, match="image token id"):
        wrap_model(model, llava.processor)


def test_attention_without_layer_idx_is_refused(llava):
    model = copy.deepcopy(llava.model)
    model.model.language_model.layers[1].self_attn.layer_idx = None
    with pytest.raises(UnsupportedModelError, match="layer_idx"):
        wrap_model(model, llava.processor)


def test_a_processor_is_required(llava):
    with pytest.raises(UnsupportedModelError, match="processor"):
        wrap_model(llava.model, None)


def test_non_square_token_count_without_a_matching_config_is_a_layout_error(llava):
    adapter = wrap_model(llava.model, llava.processor)
    assert adapter.grid_for({}, 25) == (5, 5)
    with pytest.raises(LayoutError, match="splitting"):
        adapter.grid_for({}, 24)


def test_observations_are_checked_at_the_boundary(llava):
    adapter = wrap_model(llava.model, llava.processor)
    with pytest.raises(InputError):
        adapter.prepare(Observation(image=np.zeros((8, 8), np.uint8), instruction="push"))
    with pytest.raises(InputError):
        adapter.prepare(Observation(image=observation().image, instruction="  "))


def test_default_vocab_is_the_last_256_base_ids(llava):
    adapter = wrap_model(llava.model, llava.processor)
    base = llava.processor.tokenizer.vocab_size
    assert adapter.actions.token_ids.tolist() == list(range(base - 256, base))
    assert adapter.decode(torch.tensor([0, 255])).tolist() == pytest.approx(ActionBinner().from_bins(np.array([0, 255])).tolist())


def test_action_vocab_rules():
    v = ActionVocab.last_bins(1000, descending=True)
    assert v.token_ids[0] == 999 and v.token_ids[-1] == 744
    with pytest.raises(ActionDecodingError, match="special"):
        ActionVocab.last_bins(1000, reserved=[998])
    with pytest.raises(ActionDecodingError, match="too small"):
        ActionVocab.last_bins(200)
    with pytest.raises(ActionDecodingError, match="decoder"):
        ActionVocab(token_ids=torch.arange(100))  # not 256 ids and no decoder
    with pytest.raises(ActionDecodingError, match="decoder"):
        ActionVocab(token_ids=None)  # unconstrained needs a decoder
    d = ActionVocab(token_ids=torch.tensor([7, 9, 11]), decoder=lambda ids: ids * 2.0)
    assert d.ids_of(torch.tensor([2, 0])).tolist() == [11, 7]
    assert d.decode(torch.tensor([2, 0])).tolist() == [22.0, 14.0]


def _fake_lm(sequence: list[int], vocab: int = 20):
    """prefill/step returning logits whose argmax follows `sequence`."""

    def logits_for(i):
        x = torch.zeros(vocab)
        x[sequence[i]] = 1.0
        return x

    return (lambda: logits_for(0)), (lambda tok, t: logits_for(t + 1))


def test_greedy_decode_stops_on_a_stop_token():
    prefill, step = _fake_lm([5, 6, 19, 7, 7])
    vocab = ActionVocab(token_ids=torch.tensor([5, 6, 7]), n_tokens=5, decoder=lambda ids: ids, stop_token_ids=(19,))
    bins, logits = greedy_decode(prefill, step, vocab)
    assert bins.tolist() == [0, 1] and logits.shape == (2, 3)
    no_stop = ActionVocab(token_ids=torch.tensor([5, 6, 7]), n_tokens=5, decoder=lambda ids: ids)
    assert greedy_decode(prefill, step, no_stop)[0].tolist() == [0, 1, 0, 2, 2]  # 19 not allowed: ties go to id 5
    prefill, step = _fake_lm([19])
    with pytest.raises(ActionDecodingError, match="stop"):
        greedy_decode(prefill, step, vocab)
    unconstrained = ActionVocab(token_ids=None, n_tokens=4, decoder=lambda ids: ids, stop_token_ids=(19,))
    prefill, step = _fake_lm([3, 4, 19, 2])
    assert greedy_decode(prefill, step, unconstrained)[0].tolist() == [3, 4]


def test_generic_families_have_registered_load_types():
    assert set(GenericVLAAdapter.model_types) >= {"llava", "gemma3", "idefics3"}
