"""Bench one pi0 model: time the pi0 variants, count their work and memory, check the agreements; and its report lines."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from ..config import DTPConfig
from .batched import batch_throughput
from .config import TARGETS, BenchConfig
from .models import BenchModel
from .pi0_models import pi0_observation
from .pi0_variants import check_agreement, naive_generate, variant_steps
from .profiling import work_and_memory_fields
from .report import (batch_lines, format_bytes, gpu_memory_lines, machine_lines, register_formatter, targets_line,
                     timing_table)
from .timing import timing_fields
from .variants import timed_variants

__all__ = ["bench_pi0", "format_pi0"]

log = logging.getLogger(__name__)


def bench_pi0(bm: BenchModel, cfg: BenchConfig) -> dict[str, Any]:
    """Per-step time, FLOPs, peak memory and held attention of plain / capture / dtp / naive on one random frame."""
    adapter = bm.adapter
    device = cfg.torch_device()
    obs = pi0_observation(adapter, bm.instruction, np.random.default_rng(cfg.seed))
    tau, n_pruned, _, fns, dtp, times = timed_variants(bm.name, adapter, obs, cfg, variant_steps)

    inputs = adapter.prepare(obs)
    lay = inputs.layout
    naive_gen = naive_generate(adapter, inputs, dtp.relevance_layers)
    capture_bytes = int(fns["capture"]().trace.capture_bytes)
    agreement = check_agreement(adapter, obs, dtp, cfg.seed)
    text, expert = adapter.text_config, adapter.expert_config
    s, c, k = lay.seq_len, adapter.chunk_size, adapter.num_steps
    itemsize = torch.empty((), dtype=cfg.torch_dtype()).element_size()
    # what eager attention returns: the prefix's L x H x S x S, and per denoising step L_e x H x (C + 1) x (S + C + 1)
    naive_formula = itemsize * (text.num_hidden_layers * text.num_attention_heads * s * s
                                + k * expert.num_hidden_layers * expert.num_attention_heads * (c + 1) * (s + c + 1))
    res: dict[str, Any] = {
        "family": "pi0",
        "note": bm.note,
        "frame": "random image and state",
        "instruction": obs.instruction,
        "layers": int(text.num_hidden_layers),
        "heads": int(text.num_attention_heads),
        "width": int(text.hidden_size),
        "expert_layers": int(expert.num_hidden_layers),
        "expert_width": int(expert.hidden_size),
        "seq_len": int(s),
        "image_tokens": lay.num_image_tokens,
        "prompt_tokens": int(lay.prompt_positions.numel()),
        "valid_prefix_tokens": int(inputs.model_inputs["attention_mask"].sum()),
        "chunk": int(c),
        "denoising_steps": int(k),
        "attention_steps": list(adapter.attention_steps),
        "relevance_layers": list(dtp.relevance_layers),
        "device": str(device),
        "dtype": str(cfg.torch_dtype()).removeprefix("torch."),
        "tau": tau,
        "tokens_pruned": n_pruned,
        "agreement": agreement,
        "naive_same_pruned": agreement["naive_same_pruned"],
        **timing_fields(times),
        "capture_bytes": capture_bytes,
        "naive_attention_bytes": naive_formula,
        "naive_attention_bytes_held": int(naive_gen.trace.capture_bytes),
        "threads": torch.get_num_threads(),
        "repeats": cfg.repeats,
        "min_seconds": cfg.min_seconds,
        "warmup": cfg.warmup,
        "model_shape": bm.shape,
    }
    res["capture_fraction"] = capture_bytes / naive_formula
    if cfg.memory:
        log.info("%s: peak tensor memory of each variant", bm.name)
    res.update(work_and_memory_fields(fns, adapter.model, device, count=cfg.count_work, memory=cfg.memory))
    res["targets"] = {
        "capture_ratio<=1.05": res["capture_ratio"] <= TARGETS["capture_ratio"],
        "dtp_ratio<=2.1": res["dtp_ratio"] <= TARGETS["dtp_ratio"],
        "capture_bytes<=1%naive": res["capture_fraction"] <= TARGETS["capture_fraction"],
    }
    if cfg.batch_sizes:
        log.info("%s: per-sample throughput at batch sizes %s (plain and DTP)", bm.name, list(cfg.batch_sizes))
        rng = np.random.default_rng(cfg.seed + 1)
        batch_obs = [obs] + [pi0_observation(adapter, bm.instruction, rng) for _ in range(max(cfg.batch_sizes) - 1)]
        res["batch"] = batch_throughput(adapter, batch_obs, DTPConfig(tau=tau), cfg.batch_sizes, cfg, naive=False)
        res["batch"]["frames"] = "the bench frame and random images and states; naive not batched for pi0"
    adapter.reset(cfg.seed)
    return res


ROWS = (
    ("plain", "(a) plain: SDPA, no capture"),
    ("capture", "(b) pass 1 + capture"),
    ("dtp", "(c) DTP step (pass 2: prefix + denoising)"),
    ("naive", "(d) naive: eager + output_attentions"),
)


def format_pi0(name: str, r: dict[str, Any]) -> list[str]:
    """The report lines of one pi0 result."""
    lines = [
        f"== {name}: {r['note']}",
        f"   prefix {r['layers']} layers x {r['width']}, {r['heads']} heads; sequence {r['seq_len']}: {r['image_tokens']} "
        f"image + BOS + {r['prompt_tokens']} prompt tokens, {r['valid_prefix_tokens']} valid, the rest padding; expert "
        f"{r['expert_layers']} layers x {r['expert_width']}, chunk {r['chunk']}, {r['denoising_steps']} denoising steps",
        f"   tau={r['tau']:g} prunes {r['tokens_pruned']}/{r['image_tokens']} image tokens; frame: {r['frame']}; "
        f"A from expert rows at steps {r['attention_steps']}",
    ]
    lines += machine_lines(r) + timing_table(r, ROWS, label_width=42, gflop_width=8, gflop_digits=2)
    lines.append("   (pi0 has no fast pass 2: its prefix is bidirectional, a hidden token changes every position's cache)")
    lines += gpu_memory_lines(r)
    lines.append(
        f"   held attention: capture {format_bytes(r['capture_bytes'])} vs naive (prefix L x H x S x S + K x expert L x H x (C+1) x "
        f"(S+C+1)) = {format_bytes(r['naive_attention_bytes'])} ({100 * r['capture_fraction']:.2f}%)"
    )
    a = r["agreement"]
    lines.append(
        f"   agreement (same noise): capture == plain {a['capture_equals_plain']}, pass 2 with nothing pruned == plain "
        f"{a['nothing_pruned_pass2_equals_plain']}, tau=inf step == plain {a['tau_inf_step_equals_plain']}; pruning "
        f"{a['dtp_pruned']} tokens moves the chunk by up to {a['dtp_chunk_changed_max_diff']:.3g}"
    )
    lines.append(
        f"   naive reference prunes the same tokens: {a['naive_same_pruned']}; its chunk differs from DTP's by up to "
        f"{a['naive_dtp_max_diff']:.2g} (pass 1: {a['naive_pass1_max_diff']:.2g}; eager vs SDPA rounding)"
    )
    lines.append(targets_line(r))
    if "batch" in r:
        lines += batch_lines(r["batch"])
    lines.append("")
    return lines


register_formatter("pi0", format_pi0)
