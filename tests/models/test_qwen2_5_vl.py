"""Qwen2.5-VL specifics: merged grid from image_grid_thw, 3-D positions computed once, rope_deltas, action scheme."""

from __future__ import annotations

import pytest
import torch
from tiny_models import observation

from dtp.errors import LayoutError
from dtp.models import wrap_model
from dtp.models.generic import ActionDecodingError
from dtp.models.qwen2_5_vl import Qwen2_5_VLAdapter


def _adapter(tiny):
    return wrap_model(tiny.model, tiny.processor, **tiny.adapter_kwargs)


def _positions_seen(adapter, inputs, keep=None) -> list[torch.Tensor]:
    """position_ids the language model receives in each forward of one pass."""
    seen = []
    h = adapter.lm.register_forward_pre_hook(lambda m, a, kw: seen.append(kw["position_ids"].clone()), with_kwargs=True)
    try:
        adapter.generate(inputs, keep=keep)
    finally:
        h.remove()
    return seen


def test_grid_is_image_grid_thw_after_the_2x2_merge(qwen2_5_vl):
    adapter = _adapter(qwen2_5_vl)
    inputs = adapter.prepare(observation())  # a 60x80 image, resized by the processor to 40x48 pixels
    t, h, w = inputs.model_inputs["image_grid_thw"][0].tolist()
    assert (t, h, w) == (1, 10, 12)
    assert inputs.layout.grid == (5, 6)  # not square: the grid comes from the model inputs, not sqrt(N)
    ids = inputs.model_inputs["input_ids"][0]
    assert inputs.layout.image_positions.tolist() == torch.nonzero(ids == qwen2_5_vl.model.config.image_token_id).flatten().tolist()
    with pytest.raises(LayoutError):
        adapter.grid_for(inputs.model_inputs, 29)


def test_positions_are_3d_multimodal_from_the_unpruned_sequence(qwen2_5_vl):
    adapter = _adapter(qwen2_5_vl)
    inputs = adapter.prepare(observation())
    mi = inputs.model_inputs
    pos = mi["position_ids"]
    assert pos.shape == (3, 1, inputs.layout.seq_len)
    want, _ = qwen2_5_vl.model.model.get_rope_index(
        mi["input_ids"], mm_token_type_ids=mi["mm_token_type_ids"], image_grid_thw=mi["image_grid_thw"]
    )
    assert torch.equal(pos, want)
    img = pos[:, 0, inputs.layout.image_positions]  # (3, N): temporal constant, rows and columns of the 5x6 grid
    start = int(img[0, 0])
    assert img[0].unique().tolist() == [start]
    assert img[1].view(5, 6)[:, 0].tolist() == [start + r for r in range(5)]
    assert img[2].view(5, 6)[0].tolist() == [start + c for c in range(6)]
    # generated tokens continue after the largest position, on all three axes
    assert adapter.step_positions(pos, 0).flatten().tolist() == [int(pos.max()) + 1] * 3
    assert adapter.step_positions(pos, 2).flatten().tolist() == [int(pos.max()) + 3] * 3


def test_kept_tokens_keep_their_positions_in_pass_two(qwen2_5_vl):
    adapter = _adapter(qwen2_5_vl)
    inputs = adapter.prepare(observation())
    n = inputs.layout.num_image_tokens
    keep = torch.ones(n, dtype=torch.bool)
    keep[7:19] = False
    first = _positions_seen(adapter, inputs)
    second = _positions_seen(adapter, inputs, keep)
    assert len(first) == len(second) == adapter.actions.n_tokens
    for a, b in zip(first, second):
        assert torch.equal(a, b)  # prefill and every decode step: identical 3-D positions
    assert torch.equal(first[0], inputs.model_inputs["position_ids"])


def test_mm_token_type_ids_are_passed_and_rope_deltas_reset(qwen2_5_vl):
    adapter = _adapter(qwen2_5_vl)
    inputs = adapter.prepare(observation())
    kw = adapter.prefill_kwargs(inputs.model_inputs)
    assert kw["mm_token_type_ids"].sum() == inputs.layout.num_image_tokens
    qwen2_5_vl.model.model.rope_deltas = torch.tensor([[123]])  # stale state from some earlier call
    adapter.generate(inputs)
    assert qwen2_5_vl.model.model.rope_deltas is None
    broken = {k: v for k, v in inputs.model_inputs.items() if k != "mm_token_type_ids"}
    with pytest.raises(LayoutError, match="mm_token_type_ids"):
        adapter.prefill_positions(broken)


def test_default_bins_refuse_qwen_vocabulary_and_a_decoder_is_used(qwen2_5_vl):
    with pytest.raises(ActionDecodingError, match="decoder"):
        Qwen2_5_VLAdapter(qwen2_5_vl.model, qwen2_5_vl.processor)  # Qwen's last ids are special tokens
    # A FAST-style scheme: an action vocabulary, a decoder over token ids, a stop token.
    calls = []

    def decoder(ids):
        calls.append(list(ids))
        return ids.astype("float32") / 1000.0

    eos = qwen2_5_vl.processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    adapter = Qwen2_5_VLAdapter(
        qwen2_5_vl.model, qwen2_5_vl.processor, decoder=decoder, action_token_ids=list(range(40, 296)),
        stop_token_ids=(eos,), n_action_tokens=5,
    )
    gen = adapter.generate(adapter.prepare(observation()))
    assert 1 <= gen.action_bins.numel() <= 5
    action = adapter.decode(gen.action_bins)
    assert calls[-1] == gen.extras["token_ids"] and action.tolist() == pytest.approx([i / 1000 for i in calls[-1]])
