"""Throughput per sample at several batch sizes (issue 26): plain, DTP and naive, timed in one run.

Each variant steps the same N = max(sizes) observations, B at a time (each from its own episode), so every
batch size prunes the same tokens of the same samples:
  plain  DTPPolicy(DTPConfig(enabled=False)).step_batch: one batched SDPA pass, no capture
  dtp    DTPPolicy(dtp_cfg).step_batch: batched pass 1 with the capture, r/G/A/D per sample, one batched
         pass 2 over the samples that fired (pass2="exact")
  naive  the naive reference batched the same way: one eager pass 1 with output_attentions=True over
         the batch (full L x H x S x S matrices for B samples), the same DTP math per sample on rows cut
         from them, one batched eager pass 2 over the samples that fired
Every (variant, B) pair is timed round-robin in one time_interleaved call, so all see the same load;
the report gives ms per sample and the per-sample throughput at B over that at batch 1.
"""

from __future__ import annotations

import statistics
from typing import Any, Callable, Sequence

import torch
from transformers import DynamicCache

from .. import core
from ..config import DTPConfig
from ..models.base import Generation, Observation, PreparedInputs, Trace
from ..models.batch import batch_mask, greedy_action_decode_batch, last_positions
from ..policy import DTPPolicy, StepRecord
from .timing import time_interleaved
from .variants import _attention_implementation

__all__ = ["BATCH_VARIANTS", "naive_generate_batch", "naive_step_batch", "batch_throughput"]

BATCH_VARIANTS = ("plain", "dtp", "naive")


@torch.inference_mode()
def naive_generate_batch(adapter, inputs: Sequence[PreparedInputs], relevance_layers: tuple[int, ...]) -> list[Generation]:
    """variants.naive_generate over a right-padded batch (a LlamaVLAAdapter): eager, output_attentions=True."""
    lm = adapter.lm
    layouts = [x.layout for x in inputs]
    embeds = adapter.embed_batch(list(inputs))
    dev = embeds.device
    b, width = embeds.shape[:2]
    state = {"mask": batch_mask(layouts).to(dev)}
    last = last_positions(layouts).to(dev)
    cache = DynamicCache(config=lm.config)
    attentions: list[tuple[torch.Tensor, ...]] = []  # per forward: L x (B, H, q, k)

    def prefill() -> torch.Tensor:
        out = lm(inputs_embeds=embeds, attention_mask=state["mask"], position_ids=torch.arange(width, device=dev).expand(b, width),
                 cache=cache, use_cache=True, output_attentions=True, logits_to_keep=last.view(b, 1))
        attentions.append(out.attentions)
        return out.logits[:, 0]

    def step(tokens: torch.Tensor, t: int) -> torch.Tensor:
        state["mask"] = torch.cat([state["mask"], torch.ones(b, 1, dtype=torch.long, device=dev)], dim=1)
        out = lm(input_ids=tokens, attention_mask=state["mask"], position_ids=(last + 1 + t).view(b, 1),
                 cache=cache, use_cache=True, output_attentions=True)
        attentions.append(out.attentions)
        return out.logits[:, -1]

    with _attention_implementation(lm.config, "eager"):
        bins, logits = greedy_action_decode_batch(prefill, step, adapter.model.action_token_ids(), adapter.n_action_tokens)
    held = sum(a.numel() * a.element_size() for fwd in attentions for a in fwd) // b
    full = attentions[0]  # L x (B, H, S, S)
    out = []
    for i, lay in enumerate(layouts):
        img, prompt, s = lay.image_positions.to(dev), lay.prompt_positions.to(dev), lay.seq_len
        prompt_rows = torch.stack([full[l][i][:, prompt][:, :, img] for l in relevance_layers])  # (L_sel, H, P, N)
        first = torch.stack([a[i][:, s - 1, img] for a in full])  # (L, H, N): token 0 from the prefill
        later = [torch.stack([a[i][:, -1, img] for a in fwd]) for fwd in attentions[1:]]
        action_rows = torch.stack([first, *later], dim=2)  # (L, H, T, N)
        trace = Trace(prompt_rows=prompt_rows.float(), action_rows=action_rows.float(), capture_bytes=held)
        out.append(Generation(action_bins=bins[i], action_logits=logits[i], trace=trace))
    return out


def naive_step_batch(policy: DTPPolicy, obs: Sequence[Observation]) -> list[StepRecord]:
    """The naive reference over a batch: naive pass 1, the policy's DTP math per sample, batched eager pass 2."""
    adapter = policy.adapter
    inputs = [adapter.prepare(o) for o in obs]
    recs = [StepRecord(step=0) for _ in obs]
    gens = naive_generate_batch(adapter, inputs, policy.relevance_layers)
    for rec, gen, inp in zip(recs, gens, inputs):
        rec.tokens_pass1 = gen.action_bins.tolist()
        policy._analyse(gen, inp.layout.grid, rec)
    finals = list(gens)
    fired = [i for i, rec in enumerate(recs) if rec.n_pruned > 0]
    if fired:
        with _attention_implementation(adapter.lm.config, "eager"):
            second = adapter.generate_batch([inputs[i] for i in fired], keeps=[core.keep_mask(recs[i].pruned) for i in fired])
        for i, gen in zip(fired, second):
            finals[i] = gen
    for rec, final in zip(recs, finals):
        rec.tokens = final.action_bins.tolist()
        rec.action = adapter.decode(final.action_bins)
    return recs


def _chunks(obs: Sequence[Observation], b: int) -> list[list[Observation]]:
    return [list(obs[i : i + b]) for i in range(0, len(obs), b)]


def _batch_steps(adapter, obs: Sequence[Observation], dtp_cfg: DTPConfig, sizes: Sequence[int],
                 naive: bool) -> dict[tuple[str, int], Callable[[], Any]]:
    """{(variant, B): step all of `obs`, B at a time}: every batch size does the same samples (the same firing)."""
    plain = DTPPolicy(adapter, DTPConfig(enabled=False))
    dtp = DTPPolicy(adapter, dtp_cfg)

    def stepper(policy: DTPPolicy, b: int) -> Callable[[], Any]:
        chunks = _chunks(obs, b)
        return lambda: [policy.step_batch(c, [policy.new_episode(i) for i in range(len(c))]) for c in chunks]

    fns: dict[tuple[str, int], Callable[[], Any]] = {}
    for b in sizes:
        fns[("plain", b)] = stepper(plain, b)
        fns[("dtp", b)] = stepper(dtp, b)
        if naive:
            fns[("naive", b)] = lambda chunks=_chunks(obs, b): [naive_step_batch(dtp, c) for c in chunks]
    return fns


def batch_throughput(adapter, obs: Sequence[Observation], dtp_cfg: DTPConfig, sizes: Sequence[int], cfg,
                     naive: bool = True) -> dict[str, Any]:
    """{variant: {B: per-sample figures}} for plain, dtp and naive at each batch size, timed interleaved.

    obs: the samples, max(sizes) of them; every batch size steps all of them, B at a time, so that each size
    prunes the same tokens of the same samples. cfg: the BenchConfig (rounds, device); naive=False leaves the
    naive rows out (a family without a batched naive reference: pi0).
    """
    sizes = sorted(set(int(b) for b in sizes))
    obs = list(obs[: sizes[-1]])
    if len(obs) < sizes[-1]:
        raise ValueError(f"batch {sizes[-1]} needs {sizes[-1]} observations, got {len(obs)}")
    fns = _batch_steps(adapter, obs, dtp_cfg, sizes, naive)
    named = {f"{v}@{b}": fn for (v, b), fn in fns.items()}
    device = cfg.torch_device()
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None
    times = time_interleaved(named, cfg.repeats, cfg.warmup, cfg.min_seconds, sync=sync)
    probe = DTPPolicy(adapter, dtp_cfg)
    fired = {str(b): sum(r.record.fired for c in _chunks(obs, b)
                         for r in probe.step_batch(c, [probe.new_episode(i) for i in range(len(c))])) for b in sizes}
    n = len(obs)
    out: dict[str, Any] = {"sizes": sizes, "samples": n, "fired": fired, "timed_rounds": len(times[f"plain@{sizes[0]}"])}
    for v in BATCH_VARIANTS if naive else BATCH_VARIANTS[:2]:
        row = {}
        base = statistics.median(times[f"{v}@{sizes[0]}"]) / n
        base_min = min(times[f"{v}@{sizes[0]}"]) / n
        for b in sizes:
            per_sample = statistics.median(times[f"{v}@{b}"]) / n
            fastest = min(times[f"{v}@{b}"]) / n
            # speedup: per-sample throughput at B over that at the smallest batch size (batch 1 by default);
            # the same from each one's fastest round too (other processes only ever add time)
            row[str(b)] = {"ms_per_sample": 1e3 * per_sample, "samples_per_s": 1.0 / per_sample, "speedup": base / per_sample,
                           "min_ms_per_sample": 1e3 * fastest, "speedup_of_min": base_min / fastest}
        out[v] = row
    return out

