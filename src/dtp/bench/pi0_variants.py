"""What `dtp bench` times for pi0: one control step done four ways, and the agreement checks.

  (a) plain    DTPPolicy(DTPConfig(enabled=False)).step: prefix + K denoising steps, SDPA, no capture
  (b) capture  pass 1 with AttentionCapture (prefix prompt->image rows, expert action->image rows)
  (c) dtp      DTPPolicy.step with a tau that prunes: capture + r, G, A, D + pass 2 (prefix recomputed
               with D hidden, original positions, denoised again from the same noise)
  (d) naive    eager attention with output_attentions=True on the prefix and at every denoising step
               of the expert, the same DTP math on rows cut from the full matrices, pass 2 in eager

pi0 has no fast pass 2 (dtp.fast reuses a causal LM's cache; pi0's prefix is bidirectional, so a
hidden image token changes every prefix position's keys and values).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch

from .. import core
from ..config import DTPConfig
from ..models.base import Generation, Observation, PreparedInputs, Trace
from ..models.common import capture_spec_for, padding_mask_with_holes
from ..models.pi0 import denoise
from ..policy import DTPPolicy, StepRecord
from .variants import capture_step

__all__ = ["PI0_VARIANTS", "eager_attention", "naive_generate", "naive_step", "capture_step", "variant_steps",
           "check_agreement"]

PI0_VARIANTS = ("plain", "capture", "dtp", "naive")


@contextmanager
def eager_attention(model: torch.nn.Module) -> Iterator[None]:
    """Every config of `model` (prefix, vision, expert) set to eager attention inside the block, restored after."""
    configs = {id(c): c for c in [getattr(m, "config", None) for m in model.modules()] if c is not None}
    saved = {k: c._attn_implementation_internal for k, c in configs.items()}
    try:
        for c in configs.values():
            c._attn_implementation_internal = "eager"
        yield
    finally:
        for k, c in configs.items():
            c._attn_implementation_internal = saved[k]


@torch.inference_mode()
def naive_generate(adapter, inputs: PreparedInputs, relevance_layers: tuple[int, ...]) -> Generation:
    """Pass 1 the naive way: eager attention with output_attentions=True, rows cut from the full matrices.

    Trace rows keep the heads: prompt_rows (L_sel, H, P, N) from the prefix, action_rows (L_expert, H, C, N)
    from the expert, averaged over the adapter's attention_steps, as the capture records them.
    trace.capture_bytes: the bytes of every attention tensor the model returned.
    """
    model, layout, mi = adapter.model, inputs.layout, inputs.model_inputs
    img = layout.image_positions.to(adapter.device)
    mask = mi["attention_mask"] * padding_mask_with_holes(layout.seq_len, layout, None).to(adapter.device)
    seen: list[tuple[torch.Tensor, ...]] = []  # per denoising step: L_expert x (1, H, C + 1, S + C + 1)

    def pre(module, args, kwargs):
        return args, {**kwargs, "output_attentions": True}

    def post(module, args, kwargs, output):
        seen.append(output.attentions)

    with eager_attention(model):
        embeds = model.model.embed_prefix(mi["input_ids"], mi["pixel_values"], mi["pixel_attention_mask"])
        out = model.model.vlm(
            inputs_embeds=embeds, attention_mask=mask, position_ids=mi["position_ids"],
            token_type_ids=torch.zeros_like(mi["input_ids"]), use_cache=True, output_attentions=True,
        )
        hooks = [model.model.dit.register_forward_pre_hook(pre, with_kwargs=True),
                 model.model.dit.register_forward_hook(post, with_kwargs=True)]
        try:
            chunk = denoise(model, out.cache, mask, adapter.suffix_positions(mi), mi["state"], mi["noise"],
                            adapter.num_steps)
        finally:
            for h in hooks:
                h.remove()
    prompt = layout.prompt_positions.to(adapter.device)
    prompt_rows = torch.stack([out.attentions[l][0][:, prompt][:, :, img] for l in relevance_layers])  # (L_sel, H, P, N)
    per_step = [torch.stack([a[0][:, 1:, img] for a in seen[k]]) for k in adapter.attention_steps]  # (L, H, C, N) each
    action_rows = torch.stack(per_step).float().mean(0)
    held = sum(a.numel() * a.element_size() for a in out.attentions)
    held += sum(a.numel() * a.element_size() for step in seen for a in step)
    trace = Trace(prompt_rows=prompt_rows.float(), action_rows=action_rows, capture_bytes=held)
    return Generation(action_bins=torch.empty(0, dtype=torch.long), action_logits=torch.empty(0, 0), trace=trace,
                      actions=chunk[0].float().cpu(), extras={"noise": mi["noise"]})


def naive_step(policy: DTPPolicy, obs: Observation) -> StepRecord:
    """(d): naive pass 1, the policy's own DTP math on its rows, pass 2 in eager attention."""
    adapter = policy.adapter
    rec = StepRecord(step=0)
    inputs = adapter.prepare(obs)
    gen1 = naive_generate(adapter, inputs, policy.relevance_layers)
    rec.action_pass1 = adapter.decode(gen1.output)
    policy._analyse(gen1, inputs.layout.grid, rec, obs)
    final = gen1
    if rec.n_pruned > 0:
        with eager_attention(adapter.model):
            final = adapter.generate(inputs, keep=core.keep_mask(rec.pruned))
    rec.action = adapter.decode(final.output)
    return rec


def variant_steps(adapter, obs: Observation, dtp_cfg: DTPConfig) -> tuple[dict[str, Callable[[], Any]], DTPPolicy]:
    """{variant name: zero-argument step} over the same observation, and the DTP policy."""
    plain = DTPPolicy(adapter, DTPConfig(enabled=False))
    dtp = DTPPolicy(adapter, dtp_cfg)
    fns: dict[str, Callable[[], Any]] = {
        "plain": lambda: plain.step(obs),
        "capture": lambda: capture_step(dtp, obs),
        "dtp": lambda: dtp.step(obs),
        "naive": lambda: naive_step(dtp, obs),
    }
    return fns, dtp


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


def check_agreement(adapter, obs: Observation, dtp: DTPPolicy, seed: int) -> dict[str, Any]:
    """The equalities DTP on pi0 promises, on this model and frame, each pass from the same noise:

    - the capture does not change the chunk (pass 1 with capture == plain pass);
    - pass 2 with nothing pruned (keep all) == plain pass: hiding nothing is the identity;
    - a DTP step with tau = inf (prunes nothing) decodes the plain step's actions;
    - the naive reference (eager, full matrices) prunes the same tokens as the capture, and its chunk is
      within float rounding of DTP's (eager and SDPA sum in different orders: max |diff| is reported).
    """
    adapter.reset(seed)
    inputs = adapter.prepare(obs)
    plain = adapter.generate(inputs).actions
    spec = capture_spec_for(inputs.layout)
    captured = adapter.generate(inputs, capture=spec, relevance_layers=dtp.relevance_layers).actions
    all_kept = adapter.generate(inputs, keep=torch.ones(inputs.layout.num_image_tokens, dtype=torch.bool)).actions
    adapter.reset(seed)
    plain_step = DTPPolicy(adapter, DTPConfig(enabled=False)).step(obs).action
    adapter.reset(seed)
    off_step = DTPPolicy(adapter, DTPConfig(tau=float("inf"))).step(obs).record
    adapter.reset(seed)
    rec = dtp.step(obs).record
    adapter.reset(seed)
    naive = naive_step(dtp, obs)
    adapter.reset(seed)
    out = {
        "capture_equals_plain": bool(torch.equal(captured, plain)),
        "capture_max_diff": _max_diff(captured, plain),
        "nothing_pruned_pass2_equals_plain": bool(torch.equal(all_kept, plain)),
        "nothing_pruned_pass2_max_diff": _max_diff(all_kept, plain),
        "tau_inf_step_equals_plain": off_step.n_pruned == 0 and bool((off_step.action == plain_step).all()),
        "dtp_pruned": rec.n_pruned,
        "dtp_chunk_changed_max_diff": float(abs(rec.action - rec.action_pass1).max()),
        "naive_same_pruned": bool(torch.equal(naive.pruned, rec.pruned)),
        "naive_pass1_max_diff": float(abs(naive.action_pass1 - rec.action_pass1).max()),
        "naive_dtp_max_diff": float(abs(naive.action - rec.action).max()),
    }
    out["exact"] = out["capture_equals_plain"] and out["nothing_pruned_pass2_equals_plain"] and out["tau_inf_step_equals_plain"]
    return out
