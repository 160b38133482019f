"""`generate_batch` for the transformers adapters (HFVLAAdapter families that declare it).

The processor's per-sample inputs are joined into one right-padded batch: sequence tensors (1, S_i)
are padded (input ids with the pad id, the rest with 0), other tensors (pixels) are stacked, and the
run follows dtp.models.batch: one padding mask with each sample's own holes, each sample's original
position ids, decode step t at position step_positions(sample, t).
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Sequence

import torch
from transformers import DynamicCache

from ..capture import AttentionCapture
from ..errors import LayoutError
from .base import Generation, PreparedInputs
from .batch import (batch_capture_spec, batch_mask, check_batch_request, greedy_action_decode_batch, last_positions,
                    pad_right, sample_trace)

__all__ = ["stack_model_inputs", "hf_generate_batch"]


def stack_model_inputs(dicts: Sequence[dict[str, Any]], lengths: Sequence[int], pad_id: int) -> dict[str, Any]:
    """One batch from per-sample prefill kwargs: (1, S_i) tensors right-padded to max S_i, others stacked."""
    width = max(lengths)
    out: dict[str, Any] = {}
    for key in dicts[0]:
        values = [d[key] for d in dicts]
        first = values[0]
        if not torch.is_tensor(first):
            if any(v != first for v in values[1:]):
                raise LayoutError(f"the samples' {key!r} differ; they cannot run in one batch")
            out[key] = first
        elif first.ndim == 2 and all(v.shape == (1, s) for v, s in zip(values, lengths)):
            out[key] = pad_right(values, width, pad_id if key == "input_ids" else 0)
        elif all(v.shape == first.shape for v in values):
            out[key] = torch.cat(values, dim=0)
        else:
            raise LayoutError(f"the samples' {key!r} have different shapes; they cannot run in one batch")
    return out


@torch.inference_mode()
def hf_generate_batch(
    adapter,
    inputs: list[PreparedInputs],
    *,
    keeps: list[torch.Tensor | None] | None = None,
    capture: bool = False,
    relevance_layers: tuple[int, ...] = (),
    hidden_states: bool = False,
) -> list[Generation]:
    """`adapter.generate` on each input in one right-padded pass (see HFVLAAdapter.generate_batch)."""
    check_batch_request(capture, hidden_states)
    layouts = [x.layout for x in inputs]
    lengths = [lay.seq_len for lay in layouts]
    dev = adapter.device
    pad_id = getattr(adapter.tokenizer, "pad_token_id", None) or 0
    kwargs = stack_model_inputs([adapter.prefill_kwargs(x.model_inputs) for x in inputs], lengths, pad_id)
    positions = [x.model_inputs["position_ids"] for x in inputs]
    b, width = len(inputs), max(lengths)
    state: dict[str, Any] = {"mask": batch_mask(layouts, keeps).to(dev)}
    last = last_positions(layouts).to(dev)
    cache = DynamicCache(config=adapter.text_config)
    ctx = AttentionCapture(adapter.text_config, batch_capture_spec(layouts)) if capture else nullcontext()

    def prefill() -> torch.Tensor:
        out = adapter.model(**kwargs, attention_mask=state["mask"], position_ids=pad_right(positions, width),
                            cache=cache, use_cache=True, output_hidden_states=hidden_states,
                            logits_to_keep=last.view(b, 1))
        state["hidden"] = out.hidden_states
        return out.logits[:, 0]

    def step(tokens: torch.Tensor, t: int) -> torch.Tensor:
        state["mask"] = torch.cat([state["mask"], torch.ones(b, 1, dtype=torch.long, device=dev)], dim=1)
        pos = torch.cat([adapter.step_positions(p, t) for p in positions], dim=0)
        out = adapter.model(input_ids=tokens, attention_mask=state["mask"], position_ids=pos, cache=cache, use_cache=True)
        return out.logits[:, -1]

    n = adapter.actions.n_tokens
    adapter._reset_state()
    try:
        with ctx as cap:
            bins, logits = greedy_action_decode_batch(prefill, step, adapter.actions.token_ids, n)
    finally:
        adapter._reset_state()
    out = []
    for i, layout in enumerate(layouts):
        trace = None
        if capture:
            trace = sample_trace(cap, i, layout, width, n, relevance_layers, adapter.num_layers, b,
                                 state["hidden"] if hidden_states else None)
        extras = {"token_ids": adapter.actions.ids_of(bins[i]).tolist(), "batch": b}
        out.append(Generation(action_bins=bins[i], action_logits=logits[i], trace=trace, extras=extras))
    return out
