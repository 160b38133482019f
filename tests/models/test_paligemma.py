"""PaliGemma2 specifics: 1-indexed positions, the prefix-LM mask, the vision-config grid, Gemma2's cap and window."""

from __future__ import annotations

import pytest
import torch
from tiny_models import observation

from dtp.errors import LayoutError
from dtp.models import wrap_model
from dtp.models.common import capture_spec_for


def _prefill_masks(adapter, inputs, keep=None):
    """The attention masks the language model receives in the prefill, as bool 'may attend' (S, S) per layer type."""
    seen = {}

    def hook(module, args, kwargs):
        if "masks" not in seen:
            seen["masks"] = kwargs["attention_mask"]

    h = adapter.lm.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        adapter.generate(inputs, keep=keep)
    finally:
        h.remove()
    out = {}
    for kind, m in seen["masks"].items():
        m = m[0, 0]
        out[kind] = m if m.dtype == torch.bool else m == 0
    return out


def test_positions_start_at_one(paligemma2):
    adapter = wrap_model(paligemma2.model, paligemma2.processor)
    inputs = adapter.prepare(observation())
    s = inputs.layout.seq_len
    assert inputs.model_inputs["position_ids"].tolist() == [list(range(1, s + 1))]
    assert adapter.step_positions(inputs.model_inputs["position_ids"], 0).tolist() == [[s + 1]]
    assert adapter.step_positions(inputs.model_inputs["position_ids"], 3).tolist() == [[s + 4]]


def test_layout_grid_from_the_vision_config(paligemma2):
    adapter = wrap_model(paligemma2.model, paligemma2.processor)
    layout = adapter.prepare(observation()).layout
    vc = paligemma2.model.config.vision_config
    assert layout.grid == (vc.image_size // vc.patch_size,) * 2 == (6, 6)
    assert layout.image_positions.tolist() == list(range(36))  # the image comes first
    ids = adapter.prepare(observation()).model_inputs["input_ids"][0]
    assert int(ids[36]) == paligemma2.processor.tokenizer.bos_token_id  # then BOS, then the prompt
    assert layout.prompt_positions.min() == 37
    with pytest.raises(LayoutError):
        adapter.grid_for({}, 35)


def test_prefix_lm_mask_is_kept_and_pruned_columns_are_hidden(paligemma2):
    adapter = wrap_model(paligemma2.model, paligemma2.processor)
    inputs = adapter.prepare(observation())
    layout = inputs.layout
    keep = torch.ones(layout.num_image_tokens, dtype=torch.bool)
    keep[[3, 10, 20]] = False
    masks = _prefill_masks(adapter, inputs, keep)
    assert set(masks) == {"full_attention", "sliding_attention"}
    for m in masks.values():
        last = layout.seq_len - 1
        assert bool(m[0, last])  # the first image token sees the last prompt token: bidirectional prefix
        assert bool(m[5, 40]) and bool(m[40, 5])
        pruned = layout.image_positions[~keep]
        assert not m[:, pruned].any()  # nobody attends to a pruned token
        assert m[:, layout.image_positions[keep]].all()


def test_gemma2_soft_capping_runs_eager_and_small_window_crops_the_cache(paligemma2_small_window):
    tiny = paligemma2_small_window
    adapter = wrap_model(tiny.model, tiny.processor)
    cfg = adapter.text_config
    assert cfg.attn_logit_softcapping is not None and cfg._attn_implementation == "eager"
    assert adapter.model.config.vision_config._attn_implementation == "sdpa"  # the vision tower keeps its own
    inputs = adapter.prepare(observation())
    assert cfg.sliding_window < inputs.layout.seq_len
    gen = adapter.generate(inputs, capture=capture_spec_for(inputs.layout), relevance_layers=(0,))
    sliding = [i for i, t in enumerate(cfg.layer_types) if t == "sliding_attention"]
    full = [i for i, t in enumerate(cfg.layer_types) if t == "full_attention"]
    mass = gen.trace.action_rows.sum(-1)  # (L, H, T)
    # decode queries past the window see no image key in sliding layers; full layers still do
    assert torch.all(mass[sliding][:, :, 2:] == 0)  # window 16 from position 51 on starts after the image (0..35)
    assert torch.all(mass[full] > 0)


def test_generate_with_a_holey_mask_shifts_positions_which_dtp_avoids(paligemma2):
    """The pitfall: `generate` derives positions from the mask's cumsum, shifting every token after a hole
    relative to the kept tokens before it, so it is not removal; our pass 2 (equal to removal) is not `generate`."""
    adapter = wrap_model(paligemma2.model, paligemma2.processor)
    inputs = adapter.prepare(observation())
    layout = inputs.layout
    keep = torch.ones(layout.num_image_tokens, dtype=torch.bool)
    keep[12:24] = False  # a hole in the middle: image tokens 0..11 stay before it
    ours = adapter.generate(inputs, keep=keep).action_logits[0]
    mi = {k: v for k, v in inputs.model_inputs.items() if k != "position_ids"}
    mask = torch.ones_like(mi["input_ids"])
    mask[0, layout.image_positions[~keep]] = 0
    mi["attention_mask"] = mask
    out = adapter.model.generate(**mi, max_new_tokens=1, do_sample=False, output_logits=True, return_dict_in_generate=True)
    theirs = out.logits[0][0, adapter.actions.token_ids]
    assert float((ours - theirs).abs().max()) > 1e-4
