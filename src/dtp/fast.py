"""Pass 2 without redoing what pruning cannot change (beyond the paper).

The paper's pass 2 runs the whole model again on the pruned input. In a causal (Llama-style)
language model the keys and values of a position depend only on the positions before it, so:

- "exact": the paper's pass 2, `adapter.generate(inputs, keep=keep)`: the whole prefix again,
  pruned image tokens hidden by the padding mask. The default.
- "exact_prefix": reuse pass 1's KV cache for every position before the first pruned token
  (its entries cannot depend on any pruned token), then run only the later, kept positions
  with their original position ids, and decode. Equal to "exact" up to float rounding
  (tests/test_fast.py: same actions, logits within 1e-5). It saves the prefix before the first
  pruned token plus the pruned tokens themselves.
- "approx_image": an APPROXIMATION. Reuse pass 1's cache of every kept position up to the end
  of the image span and recompute only the positions after it (prompt, proprio), then decode.
  A kept image token after the first pruned one keeps the keys/values it had when it could still
  see the pruned tokens, so the result is not what the model computes on the pruned input.
  `dtp bench` measures how often its actions equal "exact".

Both reuse modes need an adapter that declares `supports_pass1_reuse`: its pass 1 returns a
`Generation.reuse` (models.base.Pass1Cache: the filled DynamicCache, the prefill embeddings and, for
a batched pass 1, the sample's row in the shared cache) and its language model is a causal
transformers LM reachable as `adapter.lm`: today `LlamaVLAAdapter` (our TinyVLA).
PaliGemma's image+prompt prefix is bidirectional, so nothing before a pruned token is safe
to reuse there (DESIGN.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache

from .errors import ConfigError, LayoutError, UnsupportedModelError
from .models.base import Generation, PreparedInputs, TokenLayout, VLAAdapter
from .models.common import causal_lm_step, greedy_action_decode

__all__ = ["PASS2_MODES", "ReusePlan", "reuse_plan", "supports_reuse", "check_pass2_mode", "second_pass"]

PASS2_MODES = ("exact", "exact_prefix", "approx_image")


@dataclass(frozen=True)
class ReusePlan:
    """Which prefill positions pass 2 takes from pass 1's cache and which it computes.

    cached: (C,) long, sorted absolute positions whose keys/values are reused.
    computed: (M,) long, sorted absolute positions run through the model (the last is seq_len - 1).
    exact: whether the plan gives the model's output on the pruned input (up to rounding).
    """

    cached: torch.Tensor
    computed: torch.Tensor
    exact: bool

    @property
    def reused_fraction(self) -> float:
        total = self.cached.numel() + self.computed.numel()
        return self.cached.numel() / total if total else 0.0


def check_pass2_mode(mode: str) -> str:
    if mode not in PASS2_MODES:
        raise ConfigError(f"pass2 must be one of {PASS2_MODES}, got {mode!r}")
    return mode


def supports_reuse(adapter: VLAAdapter) -> bool:
    """Whether the adapter's pass 1 leaves a reusable causal KV cache (it declares supports_pass1_reuse)."""
    return bool(getattr(adapter, "supports_pass1_reuse", False))


def reuse_plan(layout: TokenLayout, keep: torch.Tensor, mode: str) -> ReusePlan:
    """Split the prefill positions 0..seq_len-1 into reused and recomputed ones for `mode`.

    keep: (N,) bool over the image tokens (True = kept). Pruned positions are in neither set.
    """
    check_pass2_mode(mode)
    if mode == "exact":
        raise ConfigError("the 'exact' pass 2 reuses nothing; call adapter.generate(inputs, keep=keep)")
    keep = keep.flatten().bool().cpu()
    if keep.numel() != layout.num_image_tokens:
        raise LayoutError(f"keep mask has {keep.numel()} entries, the image has {layout.num_image_tokens} tokens")
    s = layout.seq_len
    alive = torch.ones(s, dtype=torch.bool)
    alive[layout.image_positions.cpu()[~keep]] = False
    if mode == "exact_prefix":
        pruned = (~alive).nonzero().flatten()
        boundary = int(pruned[0]) if pruned.numel() else s - 1
    else:  # approx_image: everything up to the end of the image span comes from pass 1
        boundary = int(layout.image_positions.max()) + 1
    boundary = min(boundary, s - 1)  # the last prefill position must run: it emits action token 1
    pos = torch.arange(s)
    cached = pos[:boundary][alive[:boundary]]
    computed = pos[boundary:][alive[boundary:]]
    return ReusePlan(cached=cached, computed=computed, exact=mode == "exact_prefix")


def _cache_subset(pass1_cache: DynamicCache, positions: torch.Tensor, config, row: int | None = None) -> DynamicCache:
    """A fresh DynamicCache holding pass 1's keys/values at `positions`.

    Consumes `pass1_cache` layer by layer (each layer is dropped once copied), so that at most one
    layer exists twice; a batch's shared cache (`row` = the sample's batch row) is read, not consumed.
    """
    out = DynamicCache(config=config)
    n = positions.numel()
    contiguous = n > 0 and int(positions[-1]) - int(positions[0]) + 1 == n
    for layer_idx, layer in enumerate(pass1_cache.layers):
        k, v = layer.keys, layer.values  # (B, H_kv, S_seen, d), positions are sequence indices
        if row is not None:
            k, v = k[row : row + 1], v[row : row + 1]
        if contiguous:
            a, b = int(positions[0]), int(positions[-1]) + 1
            k, v = k[:, :, a:b], v[:, :, a:b]
        else:
            idx = positions.to(k.device)
            k, v = k.index_select(2, idx), v.index_select(2, idx)
        out.update(k, v, layer_idx)  # copies
        if row is None:
            layer.keys = layer.values = None
    return out


@torch.inference_mode()
def second_pass(
    adapter: VLAAdapter, inputs: PreparedInputs, pass1: Generation, keep: torch.Tensor, mode: str = "exact"
) -> Generation:
    """Pass 2 on the pruned input in `mode` (one of PASS2_MODES); `pass1` is pass 1's Generation.

    Pass 2 consumes pass 1's KV cache: it is taken out of `pass1.reuse` (what a reuse mode needs is
    copied first), so that pass 2 does not run with two full caches alive.
    """
    check_pass2_mode(mode)
    if mode == "exact":
        pass1.reuse = None
        return adapter.generate(inputs, keep=keep)
    if not supports_reuse(adapter):
        raise UnsupportedModelError(
            f"pass2={mode!r} needs a causal LM adapter that returns its pass-1 cache; "
            f"{type(adapter).__name__} supports only pass2='exact'"
        )
    reuse, pass1.reuse = pass1.reuse, None  # consumed here: pass 1's cache is freed once copied
    if reuse is None:
        raise UnsupportedModelError(
            "pass 1 returned no cache/embeddings to reuse (Generation.reuse); "
            "was its cache already consumed by another second_pass?"
        )
    embeds = reuse.embeds
    layout = inputs.layout
    plan = reuse_plan(layout, keep, mode)
    lm = adapter.lm
    cache = _cache_subset(reuse.cache, plan.cached, lm.config, reuse.batch_index)  # a copy of this sample's rows
    s = layout.seq_len
    dev = embeds.device
    computed = plan.computed.to(dev)
    n_cached = plan.cached.numel()
    mask = torch.ones(1, n_cached + computed.numel(), dtype=torch.long, device=dev)

    def prefill() -> torch.Tensor:
        out = lm(
            inputs_embeds=embeds.index_select(1, computed),  # (1, M, D)
            attention_mask=mask,  # cache entries and new tokens are all live, in sequence order
            position_ids=computed.unsqueeze(0),  # original positions: removal, not a shift
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        return out.logits[0, -1]

    step = causal_lm_step(lm, cache, mask, s)
    bins, logits = greedy_action_decode(prefill, step, adapter.model.action_token_ids(), adapter.n_action_tokens)
    extras = {"pass2": mode, "reused_tokens": n_cached, "computed_tokens": int(computed.numel()), "exact": plan.exact}
    return Generation(action_bins=bins, action_logits=logits, extras=extras)
