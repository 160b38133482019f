"""What `dtp bench` times: one control step done six ways, and the naive reference (d) they are compared with.

  (a) plain      DTPPolicy(DTPConfig(enabled=False)).step: one SDPA pass, no capture
  (b) capture    pass 1 with AttentionCapture (prepare + generate + decode, no DTP math)
  (c) dtp        DTPPolicy.step with a tau that prunes: capture + r, G, A, D + pass 2 (paper: "exact")
  (c) dtp_*      the same with the fast pass 2 of dtp.fast ("exact_prefix"; "approx_image", approximate)
  (d) naive      eager attention with output_attentions=True in pass 1, the same DTP math on the full
                 attention matrices, pass 2 in eager too (what a port without the capture would do)
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
from transformers import DynamicCache

from .. import core
from ..config import DTPConfig
from ..models.base import Generation, Observation, PreparedInputs, Trace
from ..models.common import capture_spec_for, greedy_action_decode, padding_mask_with_holes
from ..policy import DTPPolicy, StepRecord, mean_entropy

log = logging.getLogger(__name__)

__all__ = ["VARIANTS", "TAU_LADDER", "naive_generate", "naive_step", "capture_step", "pick_tau", "variant_steps",
           "timed_variants"]

VARIANTS = ("plain", "capture", "dtp", "dtp_exact_prefix", "dtp_approx_image", "naive")
TAU_LADDER = (1.0, 0.7, 0.5, 0.3, 0.2, 0.1, 0.05, 0.0)


@contextmanager
def _attention_implementation(config, name: str) -> Iterator[None]:
    saved = config._attn_implementation_internal
    config._attn_implementation_internal = name
    try:
        yield
    finally:
        config._attn_implementation_internal = saved


@torch.inference_mode()
def naive_generate(adapter, inputs: PreparedInputs, relevance_layers: tuple[int, ...]) -> Generation:
    """Pass 1 the naive way: eager attention, output_attentions=True, rows cut from the full matrices.

    Returns a Generation whose trace has the same shapes as the capture's (heads kept) and whose
    trace.capture_bytes is the bytes of the attention tensors the model returned.
    """
    lm, layout = adapter.lm, inputs.layout
    embeds = adapter.embed(inputs)
    dev = embeds.device
    s = layout.seq_len
    mask = padding_mask_with_holes(s, layout, None).to(dev)
    cache = DynamicCache(config=lm.config)
    attentions: list[tuple[torch.Tensor, ...]] = []  # per forward: L x (1, H, q, k)
    state = {"mask": mask}

    def prefill() -> torch.Tensor:
        out = lm(inputs_embeds=embeds, attention_mask=mask, position_ids=torch.arange(s, device=dev).unsqueeze(0),
                 cache=cache, use_cache=True, output_attentions=True, logits_to_keep=1)
        attentions.append(out.attentions)
        return out.logits[0, -1]

    def step(token: torch.Tensor, t: int) -> torch.Tensor:
        state["mask"] = torch.cat([state["mask"], torch.ones(1, 1, dtype=torch.long, device=dev)], dim=1)
        out = lm(input_ids=token, attention_mask=state["mask"], position_ids=torch.tensor([[s + t]], device=dev),
                 cache=cache, use_cache=True, output_attentions=True)
        attentions.append(out.attentions)
        return out.logits[0, -1]

    with _attention_implementation(lm.config, "eager"):
        bins, logits = greedy_action_decode(prefill, step, adapter.model.action_token_ids(), adapter.n_action_tokens)
    img, prompt = layout.image_positions.to(dev), layout.prompt_positions.to(dev)
    full = attentions[0]  # L x (1, H, S, S)
    prompt_rows = torch.stack([full[l][0][:, prompt][:, :, img] for l in relevance_layers])  # (L_sel, H, P, N)
    per_token = [torch.stack([a[0][:, -1, img] for a in fwd]) for fwd in attentions]  # T x (L, H, N)
    action_rows = torch.stack(per_token, dim=2)  # (L, H, T, N)
    held = sum(a.numel() * a.element_size() for fwd in attentions for a in fwd)
    trace = Trace(prompt_rows=prompt_rows.float(), action_rows=action_rows.float(), capture_bytes=held)
    return Generation(action_bins=bins, action_logits=logits, trace=trace)


def naive_step(policy: DTPPolicy, obs: Observation) -> StepRecord:
    """(d): naive pass 1, the policy's own DTP math on its rows, pass 2 in eager attention."""
    adapter = policy.adapter
    rec = StepRecord(step=0)
    inputs = adapter.prepare(obs)
    gen1 = naive_generate(adapter, inputs, policy.relevance_layers)
    rec.tokens_pass1 = gen1.action_bins.tolist()
    policy._analyse(gen1, inputs.layout.grid, rec)
    final = gen1
    if rec.n_pruned > 0:
        with _attention_implementation(adapter.lm.config, "eager"):
            final = adapter.generate(inputs, keep=core.keep_mask(rec.pruned))
    rec.tokens = final.action_bins.tolist()
    rec.action = adapter.decode(final.action_bins)
    return rec


def capture_step(policy: DTPPolicy, obs: Observation) -> Generation:
    """(b): the policy's pass 1 with the capture on, and nothing after it but decoding the action
    (the bins, or a continuous head's chunk) and its entropy, as (a) does."""
    adapter = policy.adapter
    inputs = adapter.prepare(obs)
    gen = adapter.generate(inputs, capture=capture_spec_for(inputs.layout), relevance_layers=policy.relevance_layers)
    adapter.decode(gen.output)
    mean_entropy(gen.action_logits)  # NaN at once for a head without tokens
    return gen


def pick_tau(adapter, obs: Observation, requested: float | None) -> tuple[float, int]:
    """(tau, tokens pruned): the requested tau, or the largest of TAU_LADDER that prunes on `obs`."""
    ladder = (requested,) if requested is not None else TAU_LADDER
    n = 0
    for tau in ladder:
        n = DTPPolicy(adapter, DTPConfig(tau=tau)).step(obs).record.n_pruned
        if n > 0:
            return float(tau), n
    return float(ladder[-1]), n


def variant_steps(adapter, obs: Observation, dtp_cfg: DTPConfig) -> tuple[dict[str, Callable[[], Any]], DTPPolicy]:
    """{variant name: zero-argument step} over the same observation, and the exact-pass-2 policy."""
    plain = DTPPolicy(adapter, DTPConfig(enabled=False))
    dtp = DTPPolicy(adapter, dtp_cfg)
    dtp_prefix = DTPPolicy(adapter, dtp_cfg, pass2="exact_prefix")
    dtp_approx = DTPPolicy(adapter, dtp_cfg, pass2="approx_image")
    fns: dict[str, Callable[[], Any]] = {
        "plain": lambda: plain.step(obs),
        "capture": lambda: capture_step(dtp, obs),
        "dtp": lambda: dtp.step(obs),
        "dtp_exact_prefix": lambda: dtp_prefix.step(obs),
        "dtp_approx_image": lambda: dtp_approx.step(obs),
        "naive": lambda: naive_step(dtp, obs),
    }
    return fns, dtp


def timed_variants(label: str, adapter, obs: Observation, cfg, steps: Callable = variant_steps):
    """Pick a tau that prunes on `obs`, build the variants' step functions with `steps` (a model family's
    variant_steps) and time them interleaved: (tau, tokens pruned, DTPConfig, fns, DTP policy, seconds per call)."""
    from .timing import time_interleaved

    tau, n_pruned = pick_tau(adapter, obs, cfg.tau)
    dtp_cfg = DTPConfig(tau=tau)
    fns, dtp = steps(adapter, obs, dtp_cfg)
    log.info("%s: tau=%g prunes %d tokens; timing %d variants x %d rounds", label, tau, n_pruned, len(fns),
             cfg.warmup + cfg.repeats)
    device = cfg.torch_device()
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None
    times = time_interleaved(fns, cfg.repeats, cfg.warmup, cfg.min_seconds, sync=sync)
    return tau, n_pruned, dtp_cfg, fns, dtp, times
