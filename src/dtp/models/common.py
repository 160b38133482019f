"""Plumbing every adapter shares: capture specs from a layout, traces from a capture, greedy action decoding."""

from __future__ import annotations

from typing import Callable

import torch

from ..capture import AttentionCapture, CaptureSpec
from ..errors import LayoutError
from .base import TokenLayout, Trace

__all__ = ["capture_spec_for", "trace_from_capture", "greedy_action_decode", "causal_lm_step", "padding_mask_with_holes",
           "hidden_trace"]


def capture_spec_for(layout: TokenLayout) -> CaptureSpec:
    """Rows DTP needs: prompt queries and the last prefill query (it emits action 1), then each decode query.

    Heads are averaged as they are recorded (Trace rows then have H = 1): relevance and Eq. 4 use
    only head means, so the capture holds H times less (see docs/performance.md).
    """
    last = torch.tensor([layout.seq_len - 1])
    queries = torch.unique(torch.cat([layout.prompt_positions.long().cpu(), last]))
    return CaptureSpec(key_positions=layout.image_positions, query_positions=queries, record_decode=True, mean_heads=True)


def action_query_positions(layout: TokenLayout, n_tokens: int) -> list[int]:
    """The query that emits action token t sits at seq_len - 1 + t."""
    return [layout.seq_len - 1 + t for t in range(n_tokens)]


def trace_from_capture(
    cap: AttentionCapture,
    layout: TokenLayout,
    n_tokens: int,
    relevance_layers: tuple[int, ...],
    num_layers: int,
) -> Trace:
    """Cut the captured rows into the prompt rows (relevance layers) and action rows (all layers), batch 0."""
    prompt_rows = None
    if relevance_layers:
        prompt_rows = cap.rows_at(layout.prompt_positions, layers=list(relevance_layers))[:, 0]
    action_rows = cap.rows_at(action_query_positions(layout, n_tokens), layers=list(range(num_layers)))[:, 0]
    return Trace(prompt_rows=prompt_rows, action_rows=action_rows, capture_bytes=cap.nbytes())


def hidden_trace(hidden_states: tuple[torch.Tensor, ...], layout: TokenLayout, layers: tuple[int, ...]):
    """(prompt_hidden (L_sel, P, D), image_hidden (L_sel, N, D)) from a prefill's hidden states.

    hidden_states[0] is the embedding output, hidden_states[l + 1] the output of layer l.
    """
    hs = torch.stack([hidden_states[l + 1][0] for l in layers]).float()  # (L_sel, S, D)
    return hs[:, layout.prompt_positions], hs[:, layout.image_positions]


def padding_mask_with_holes(seq_len: int, layout: TokenLayout, keep: torch.Tensor | None) -> torch.Tensor:
    """(1, seq_len) long mask, 0 at pruned image tokens. Original positions must be passed alongside."""
    mask = torch.ones(1, seq_len, dtype=torch.long)
    if keep is not None:
        keep = keep.flatten().bool().cpu()
        if keep.numel() != layout.num_image_tokens:
            raise LayoutError(f"keep mask has {keep.numel()} entries, the image has {layout.num_image_tokens} tokens")
        mask[0, layout.image_positions[~keep]] = 0
    return mask


def causal_lm_step(lm: torch.nn.Module, cache, mask: torch.Tensor, seq_len: int) -> Callable[[torch.Tensor, int], torch.Tensor]:
    """greedy_action_decode's `step` for a batch-1 causal LM after its prefill: each generated token
    adds one live column to `mask` (1, S') and sits at position seq_len + t (pruned positions stay holes)."""
    dev = mask.device
    state = {"mask": mask}

    def step(token: torch.Tensor, t: int) -> torch.Tensor:
        state["mask"] = torch.cat([state["mask"], torch.ones(1, 1, dtype=torch.long, device=dev)], dim=1)
        out = lm(
            input_ids=token,
            attention_mask=state["mask"],
            position_ids=torch.tensor([[seq_len + t]], device=dev),
            cache=cache,
            use_cache=True,
        )
        return out.logits[0, -1]

    return step


def greedy_action_decode(
    prefill: Callable[[], torch.Tensor],
    step: Callable[[torch.Tensor, int], torch.Tensor],
    action_token_ids: torch.Tensor,
    n_tokens: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy decoding constrained to the action vocabulary.

    prefill() -> last-position logits (V,); step(token_id (1, 1), t) -> logits (V,) after
    feeding the t-th generated token. Returns (bins (T,), logits over bins (T, bins)).
    """
    bins, logits_out = [], []
    logits = prefill()
    ids = action_token_ids.to(logits.device)
    for t in range(n_tokens):
        lb = logits[ids].float()
        b = int(torch.argmax(lb))
        bins.append(b)
        logits_out.append(lb.cpu())
        if t + 1 < n_tokens:
            logits = step(ids[b].view(1, 1), t)
    return torch.tensor(bins, dtype=torch.long), torch.stack(logits_out)
