"""`PI0Adapter.generate_batch`: B observations through one prefix pass and one denoising loop.

pi0's processor pads every prompt to the same length, so the samples' prefixes share their columns:
the batch stacks the processor's tensors, each sample keeps its own padding mask (with its pruned
image tokens as holes), its own position ids, its own expert positions and the noise its `prepare`
drew. So each sample's chunk is that of `generate` on it alone, up to float rounding.
"""

from __future__ import annotations

import dataclasses
from contextlib import nullcontext
from typing import Any

import torch

from ..capture import AttentionCapture, CaptureSpec
from ..errors import LayoutError
from .base import Generation, PreparedInputs, Trace
from .batch import batch_capture_spec, batch_mask, check_batch_request
from .common import hidden_trace
from .pi0 import _ExpertStep, denoise

__all__ = ["pi0_generate_batch"]

_STACKED = ("input_ids", "attention_mask", "position_ids", "pixel_values", "pixel_attention_mask", "state", "noise")


@torch.inference_mode()
def pi0_generate_batch(
    adapter,
    inputs: list[PreparedInputs],
    *,
    keeps: list[torch.Tensor | None] | None = None,
    capture: bool = False,
    relevance_layers: tuple[int, ...] = (),
    hidden_states: bool = False,
) -> list[Generation]:
    """`adapter.generate` on each input (keeps[i]: sample i's kept image tokens), batched; see the module docstring."""
    check_batch_request(capture, hidden_states)
    layouts = [x.layout for x in inputs]
    if len({lay.seq_len for lay in layouts}) != 1:
        raise LayoutError("pi0 prefixes of different lengths cannot share a batch (the processor pads them to one)")
    mi = {k: torch.cat([x.model_inputs[k] for x in inputs]) for k in _STACKED}
    b, s = mi["input_ids"].shape
    mask = mi["attention_mask"] * batch_mask(layouts, keeps).to(adapter.device)
    spec = batch_capture_spec(layouts) if capture else None
    pre_ctx = nullcontext()
    if spec is not None and relevance_layers:  # the prefix's rows serve relevance only: those layers
        prompts = torch.unique(torch.cat([lay.prompt_positions for lay in layouts]))
        pre_ctx = AttentionCapture(adapter.text_config, dataclasses.replace(spec, query_positions=prompts,
                                                                            layers=tuple(relevance_layers)))
    with pre_ctx as pre_cap:
        out = adapter.prefix(mi, mask, hidden_states)

    sums: dict[str, Any] = {"rows": None, "n": 0}
    action_q = adapter.expert_query_positions(layouts[0])
    expert_spec = None
    if spec is not None:
        expert_spec = CaptureSpec(key_positions=spec.key_positions, query_positions=torch.tensor(action_q),
                                  record_decode=False, mean_heads=True)

    def on_step(k: int):
        if expert_spec is None or k not in adapter.attention_steps:
            return nullcontext()
        return _ExpertStep(adapter.expert_config, expert_spec, s, action_q, adapter.num_expert_layers, sums)

    suffix = torch.cat([adapter.suffix_positions(x.model_inputs) for x in inputs])  # (B, C + 1), each its own
    chunks = denoise(adapter.model, out.cache, mask, suffix, mi["state"], mi["noise"], adapter.num_steps, on_step)
    gens = []
    for i, (x, lay) in enumerate(zip(inputs, layouts)):
        trace = None
        if spec is not None:
            prompt_rows = None
            if relevance_layers:
                prompt_rows = pre_cap.rows_at(lay.prompt_positions, layers=list(relevance_layers))[:, i]
            action_rows = sums["rows"][:, i] / sums["n"]  # (L_expert, H, C, N), mean over the recorded steps
            nbytes = (pre_cap.nbytes() // b if relevance_layers else 0) + action_rows.numel() * action_rows.element_size()
            trace = Trace(prompt_rows=prompt_rows, action_rows=action_rows, capture_bytes=nbytes)
            if hidden_states:
                hidden = tuple(h[i : i + 1] for h in out.hidden_states)
                trace.prompt_hidden, trace.image_hidden = hidden_trace(hidden, lay, relevance_layers)
        gens.append(Generation(action_bins=torch.empty(0, dtype=torch.long), action_logits=torch.empty(0, 0), trace=trace,
                               actions=chunks[i].float().cpu(), extras={"noise": x.model_inputs["noise"], "batch": b}))
    return gens
