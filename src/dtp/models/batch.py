"""Batch plumbing the adapters share: right-padded masks, batched greedy decoding, per-sample traces.

B prepared observations run as one right-padded sequence of S = max seq_len columns. Sample i's
real tokens sit at the columns and position ids they have when it runs alone, its padding columns
are hidden by the attention mask, pruned image tokens are holes in the same mask (the exact-pruning
mechanism of the unbatched pass 2), and decode step t sits at column S + t with position id
seq_len_i + t. So each sample's numbers are those of its unbatched run, up to float rounding
(tests/test_step_batch.py checks it).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from ..capture import AttentionCapture, CaptureSpec
from ..errors import LayoutError
from .base import TokenLayout, Trace
from .common import hidden_trace

__all__ = [
    "check_batch_request",
    "batch_mask",
    "batch_capture_spec",
    "sample_trace",
    "greedy_action_decode_batch",
    "pad_right",
    "last_positions",
]


def check_batch_request(capture: bool, hidden_states: bool) -> None:
    """A batched pass that returns hidden states must capture too (similarity relevance reads both in pass 1)."""
    if hidden_states and not capture:
        raise ValueError("hidden_states=True needs a capture too (similarity relevance is computed in pass 1)")


def last_positions(layouts: Sequence[TokenLayout]) -> torch.Tensor:
    """(B,) long: each sample's last prefill column (it emits action token 1)."""
    return torch.tensor([lay.seq_len - 1 for lay in layouts], dtype=torch.long)


def batch_mask(layouts: Sequence[TokenLayout], keeps: Sequence[torch.Tensor | None] | None = None) -> torch.Tensor:
    """(B, S) long padding mask: 1 on each sample's real tokens, 0 on its right padding and pruned image tokens."""
    s = max(lay.seq_len for lay in layouts)
    mask = torch.zeros(len(layouts), s, dtype=torch.long)
    for i, lay in enumerate(layouts):
        mask[i, : lay.seq_len] = 1
        keep = None if keeps is None else keeps[i]
        if keep is not None:
            keep = keep.flatten().bool().cpu()
            if keep.numel() != lay.num_image_tokens:
                raise LayoutError(f"keep mask has {keep.numel()} entries, the image has {lay.num_image_tokens} tokens")
            mask[i, lay.image_positions[~keep]] = 0
    return mask


def pad_right(rows: Sequence[torch.Tensor], length: int, value: float | int = 0) -> torch.Tensor:
    """Stack (1, S_i, ...) tensors into (B, length, ...), filling the right with `value`."""
    first = rows[0]
    out = first.new_full((len(rows), length, *first.shape[2:]), value)
    for i, r in enumerate(rows):
        out[i, : r.shape[1]] = r[0]
    return out


def batch_capture_spec(layouts: Sequence[TokenLayout]) -> CaptureSpec:
    """The rows DTP needs for every sample: all prompt queries, every last prefill query, the decode queries.

    Samples must share their image columns (true of right padding when the image precedes the prompt).
    """
    keys = layouts[0].image_positions
    for lay in layouts[1:]:
        if not torch.equal(lay.image_positions, keys):
            raise LayoutError("the samples' image tokens sit at different columns; this batch cannot share a capture")
    queries = torch.unique(torch.cat([lay.prompt_positions.long().cpu() for lay in layouts] + [last_positions(layouts)]))
    return CaptureSpec(key_positions=keys, query_positions=queries, record_decode=True, mean_heads=True)


def sample_trace(
    cap: AttentionCapture,
    i: int,
    layout: TokenLayout,
    width: int,
    n_tokens: int,
    relevance_layers: tuple[int, ...],
    num_layers: int,
    batch: int,
    hidden: tuple[torch.Tensor, ...] | None = None,
) -> Trace:
    """Sample i's Trace from a batch capture over `width` prefill columns (what trace_from_capture gives alone).

    Action token 0 is emitted by the sample's last prefill column, token t >= 1 by decode column width + t - 1.
    capture_bytes is the batch's total over `batch` (each sample's share).
    """
    prompt_rows = None
    if relevance_layers:
        prompt_rows = cap.rows_at(layout.prompt_positions, layers=list(relevance_layers))[:, i]
    queries = [layout.seq_len - 1] + [width + t - 1 for t in range(1, n_tokens)]
    action_rows = cap.rows_at(queries, layers=list(range(num_layers)))[:, i]
    trace = Trace(prompt_rows=prompt_rows, action_rows=action_rows, capture_bytes=cap.nbytes() // batch)
    if hidden is not None:
        trace.prompt_hidden, trace.image_hidden = hidden_trace(tuple(h[i : i + 1] for h in hidden), layout, relevance_layers)
    return trace


def greedy_action_decode_batch(
    prefill: Callable[[], torch.Tensor],
    step: Callable[[torch.Tensor, int], torch.Tensor],
    action_token_ids: torch.Tensor | None,
    n_tokens: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy decoding constrained to the action vocabulary, B samples in step (common.greedy_action_decode per row).

    prefill() -> (B, V) logits of each sample's last prefill position; step(ids (B, 1), t) -> (B, V)
    after feeding the t-th generated tokens. action_token_ids None: the whole vocabulary (index = id).
    Returns (bins (B, T), logits over bins (B, T, bins)).
    """
    logits = prefill()
    ids = None if action_token_ids is None else action_token_ids.to(logits.device)
    bins, logits_out = [], []
    for t in range(n_tokens):
        lb = (logits if ids is None else logits[:, ids]).float()  # (B, bins)
        b = torch.argmax(lb, dim=-1)  # first maximum per row, as the unbatched argmax
        bins.append(b.cpu())
        logits_out.append(lb.cpu())
        if t + 1 < n_tokens:
            logits = step((b if ids is None else ids[b]).view(-1, 1), t)
    return torch.stack(bins, dim=1), torch.stack(logits_out, dim=1)
