"""Reference computations the adapter tests compare against (eager attention, removal, plain generate)."""

from __future__ import annotations

from typing import Any

import torch
from transformers import DynamicCache

from dtp.models.base import PreparedInputs
from dtp.models.generic import HFVLAAdapter
from dtp.models.openvla import OpenVLAAdapter
from dtp.models.paligemma import PaliGemmaAdapter


def _embeds_path(adapter: HFVLAAdapter) -> bool:
    """OpenVLA-style adapters feed the language model embeddings; the others call the whole VLM."""
    return isinstance(adapter, OpenVLAAdapter)


def _target(adapter: HFVLAAdapter, model=None):
    model = adapter.model if model is None else model
    return model.language_model if _embeds_path(adapter) else model


def _extend_types(adapter: HFVLAAdapter, kwargs: dict[str, Any], n_new: int) -> dict[str, Any]:
    """Token-type inputs for generated tokens: PaliGemma's causal suffix is 1; Gemma3's and Qwen's text is 0."""
    out = dict(kwargs)
    if "token_type_ids" in out:
        tt = out["token_type_ids"]
        fill = 1 if isinstance(adapter, PaliGemmaAdapter) else 0
        out["token_type_ids"] = torch.cat([tt, torch.full((1, n_new), fill, dtype=tt.dtype)], dim=1)
    if "mm_token_type_ids" in out:
        mm = out["mm_token_type_ids"]
        out["mm_token_type_ids"] = torch.cat([mm, mm.new_zeros(1, n_new)], dim=1)
    return out


def full_positions(adapter: HFVLAAdapter, inputs: PreparedInputs, n_new: int) -> torch.Tensor:
    pos = inputs.model_inputs["position_ids"]
    steps = [adapter.step_positions(pos, t) for t in range(n_new)]
    return torch.cat([pos, *steps], dim=-1)


@torch.inference_mode()
def eager_rows(eager_model, adapter: HFVLAAdapter, inputs: PreparedInputs, token_ids: list[int]):
    """Attention rows on image keys from one full eager forward over prefill + fed-back tokens.

    Returns (L, H, S + T - 1, N): every query position, every layer.
    """
    layout = inputs.layout
    mi = inputs.model_inputs
    fed = torch.tensor([token_ids[:-1]], dtype=torch.long)
    kw = _extend_types(adapter, adapter.prefill_kwargs(mi), fed.shape[1])
    target = _target(adapter, eager_model)
    if _embeds_path(adapter):
        kw["inputs_embeds"] = torch.cat([mi["inputs_embeds"], target.get_input_embeddings()(fed)], dim=1)
    else:
        kw["input_ids"] = torch.cat([mi["input_ids"], fed], dim=1)
    s_full = layout.seq_len + fed.shape[1]
    out = target(
        **kw,
        position_ids=full_positions(adapter, inputs, fed.shape[1]),
        attention_mask=torch.ones(1, s_full, dtype=torch.long),
        output_attentions=True,
        use_cache=False,
    )
    assert len(out.attentions) == adapter.num_layers
    return torch.stack([a[0][:, :, layout.image_positions].float() for a in out.attentions])


def merged_embeddings(adapter: HFVLAAdapter, inputs: PreparedInputs) -> torch.Tensor:
    """(1, S, D) the sequence the language model receives (text embeddings with image features merged)."""
    seen: dict[str, torch.Tensor] = {}

    def hook(module, args, kwargs):
        if "embeds" not in seen:
            seen["embeds"] = kwargs["inputs_embeds"].detach().clone()

    h = adapter.lm.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        adapter.generate(inputs)
    finally:
        h.remove()
    return seen["embeds"]


@torch.inference_mode()
def mask_vs_removal(adapter: HFVLAAdapter, inputs: PreparedInputs, keep: torch.Tensor) -> dict[str, float]:
    """Max |logit difference| between hiding pruned tokens by mask and dropping their embeddings.

    prefill: logits at every kept position from one uncached forward each way;
    decode: the adapter's pass-2 action logits vs a cached greedy run on the shortened sequence
    (same tokens fed back, original positions).
    """
    layout = inputs.layout
    mi = inputs.model_inputs
    s = layout.seq_len
    pruned_pos = layout.image_positions[~keep]
    kept = torch.ones(s, dtype=torch.bool)
    kept[pruned_pos] = False
    pos = mi["position_ids"]
    model = _target(adapter)

    # prefill, uncached, all positions
    hole_mask = torch.ones(1, s, dtype=torch.long)
    hole_mask[0, pruned_pos] = 0
    by_mask = model(**adapter.prefill_kwargs(mi), attention_mask=hole_mask, position_ids=pos, use_cache=False).logits
    embeds = merged_embeddings(adapter, inputs)
    extra = {}
    if "token_type_ids" in mi:
        extra["token_type_ids"] = mi["token_type_ids"][:, kept]
    n_kept = int(kept.sum())
    by_removal = model(
        inputs_embeds=embeds[:, kept],
        attention_mask=torch.ones(1, n_kept, dtype=torch.long),
        position_ids=pos[..., kept],
        use_cache=False,
        **extra,
    ).logits
    prefill_diff = float((by_mask[0, kept] - by_removal[0]).abs().max())

    # the full pass 2: adapter (mask) vs removal with a cache
    gen = adapter.generate(inputs, keep=keep)
    ids = adapter.actions.ids_of(gen.action_bins).tolist()
    action_ids = adapter.actions.token_ids
    cache = DynamicCache(config=adapter.text_config)
    out = model(
        inputs_embeds=embeds[:, kept],
        attention_mask=torch.ones(1, n_kept, dtype=torch.long),
        position_ids=pos[..., kept],
        cache=cache,
        use_cache=True,
        **extra,
    )
    rows = [out.logits[0, -1]]
    mask = torch.ones(1, n_kept, dtype=torch.long)
    for t, tok in enumerate(ids[:-1]):
        mask = torch.cat([mask, torch.ones(1, 1, dtype=torch.long)], dim=1)
        out = model(
            input_ids=torch.tensor([[tok]]),
            attention_mask=mask,
            position_ids=adapter.step_positions(pos, t),
            cache=cache,
            use_cache=True,
        )
        rows.append(out.logits[0, -1])
    removal_logits = torch.stack(rows)
    if action_ids is not None:
        removal_logits = removal_logits[:, action_ids]
    decode_diff = float((gen.action_logits - removal_logits.float()).abs().max())
    same_tokens = torch.equal(removal_logits.argmax(-1), gen.action_bins)
    return {"prefill": prefill_diff, "decode": decode_diff, "same_tokens": same_tokens}


@torch.inference_mode()
def plain_generate(adapter: HFVLAAdapter, inputs: PreparedInputs, n_tokens: int, constrain: bool) -> list[int]:
    """The model's own `generate`, greedy, from the processor's inputs (optionally constrained to action ids)."""
    mi = {k: v for k, v in inputs.model_inputs.items() if k != "position_ids"}
    kw: dict[str, Any] = dict(max_new_tokens=n_tokens, min_new_tokens=n_tokens, do_sample=False)
    if constrain:
        allowed = adapter.actions.token_ids.tolist()
        kw["prefix_allowed_tokens_fn"] = lambda batch_id, ids: allowed
    if _embeds_path(adapter):  # OpenVLA's predict_action: the LM generates from the multimodal embeddings
        e = mi["inputs_embeds"]
        out = adapter.lm.generate(inputs_embeds=e, attention_mask=torch.ones(1, e.shape[1], dtype=torch.long), **kw)
        return out[0].tolist()
    mi["attention_mask"] = torch.ones_like(mi["input_ids"])
    out = adapter.model.generate(**mi, **kw)
    return out[0, mi["input_ids"].shape[1]:].tolist()
