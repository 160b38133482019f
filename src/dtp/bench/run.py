"""Run the bench: per model, time the variants, count their work and memory, and collect the extras."""

from __future__ import annotations

import logging
import os
import platform
import time
from typing import Any

import numpy as np
import torch

from .. import core
from .agreement import agreement
from .batched import batch_throughput
from .config import TARGETS, BenchConfig
from .models import BenchModel, build_model, env_frames, random_observation, shape_of
from .profiling import work_and_memory_fields
from .rollouts import batched_throughput, throughput
from .timing import timing_fields
from .variants import capture_step, naive_step, timed_variants

__all__ = ["bench_model", "machine", "run_bench"]

log = logging.getLogger(__name__)


def bench_model(bm: BenchModel, cfg: BenchConfig) -> dict[str, Any]:
    adapter = bm.adapter
    device = cfg.torch_device()
    rng = np.random.default_rng(cfg.seed)
    obs = random_observation(adapter, bm.instruction, rng)
    frame_source = "random image"
    if bm.benchmark_frames:  # the model trained on these frames sees one; random weights see noise
        try:
            obs = next(env_frames(adapter, 1, cfg.seed))
            frame_source = "Meta-World frame (first reset of the first task)"
        except Exception as e:  # no simulator or no GL here
            frame_source = f"random image (simulator unavailable: {type(e).__name__})"
    tau, _, dtp_cfg, fns, dtp, times = timed_variants(bm.name, adapter, obs, cfg)

    inputs = adapter.prepare(obs)
    shape = shape_of(adapter, inputs)
    rec = dtp.step(obs).record
    naive_rec = naive_step(dtp, obs)
    gen1 = capture_step(dtp, obs)
    l, h, s = shape["layers"], shape["heads"], shape["seq_len"]
    itemsize = torch.empty((), dtype=cfg.torch_dtype()).element_size()
    naive_formula = l * h * s * s * itemsize
    plan = None
    if rec.n_pruned:
        from ..fast import reuse_plan

        plan = reuse_plan(inputs.layout, core.keep_mask(rec.pruned), "exact_prefix")
    res: dict[str, Any] = {
        "note": bm.note,
        "frame": frame_source,
        "instruction": obs.instruction,
        **shape,
        "device": str(device),
        "dtype": str(cfg.torch_dtype()).removeprefix("torch."),
        "tau": tau,
        "tokens_pruned": rec.n_pruned,
        "exact_prefix_reused_tokens": int(plan.cached.numel()) if plan is not None else 0,
        "naive_same_pruned": bool(torch.equal(naive_rec.pruned, rec.pruned)),
        "naive_same_actions": naive_rec.tokens == rec.tokens,
        **timing_fields(times),
        "capture_bytes": int(gen1.trace.capture_bytes),
        "naive_attention_bytes": naive_formula,
        "naive_attention_bytes_held": int(naive_rec.capture_bytes),
        "threads": torch.get_num_threads(),
        "repeats": cfg.repeats,
        "min_seconds": cfg.min_seconds,
        "warmup": cfg.warmup,
    }
    if bm.shape is not None:
        res["model_shape"] = bm.shape
    res["capture_fraction"] = res["capture_bytes"] / naive_formula
    if cfg.memory:
        log.info("%s: peak tensor memory of each variant (%s)", bm.name, "allocator" if device.type == "cuda" else "profiler")
    res.update(work_and_memory_fields(fns, adapter.model, device, count=cfg.count_work, memory=cfg.memory))
    res["targets"] = {
        "capture_ratio<=1.05": res["capture_ratio"] <= TARGETS["capture_ratio"],
        "dtp_ratio<=2.1": res["dtp_ratio"] <= TARGETS["dtp_ratio"],
        "capture_bytes<=1%naive": res["capture_fraction"] <= TARGETS["capture_fraction"],
    }
    if cfg.batch_sizes and getattr(adapter, "supports_batch", False):
        log.info("%s: per-sample throughput at batch sizes %s", bm.name, list(cfg.batch_sizes))
        batch_obs, source = _batch_observations(bm, obs, max(cfg.batch_sizes), cfg.seed)
        res["batch"] = batch_throughput(adapter, batch_obs, dtp_cfg, cfg.batch_sizes, cfg)
        res["batch"]["frames"] = source
    if bm.benchmark_frames and cfg.agreement_steps:
        log.info("%s: pass-2 agreement on %d frames", bm.name, cfg.agreement_steps)
        res["agreement"] = agreement(adapter, dtp_cfg, cfg.agreement_steps, cfg.seed, bm.instruction)
        res["agreement"]["weights"] = "shipped checkpoint" if bm.shipped else "random (flat logits: agreement means little)"
    if bm.benchmark_frames and cfg.episodes:
        log.info("%s: rollout throughput, %d episodes with DTP off and on", bm.name, cfg.episodes)
        res["throughput"] = _unless_no_simulator(throughput, adapter, dtp_cfg, cfg.episodes, cfg.seed)
    if bm.benchmark_frames and cfg.rollout_batch_episodes and getattr(adapter, "supports_batch", False):
        log.info("%s: rollouts at --batch 1 and --batch %d, %d episodes each", bm.name, cfg.rollout_batch,
                 cfg.rollout_batch_episodes)
        res["rollout_batch"] = _unless_no_simulator(batched_throughput, adapter, dtp_cfg, cfg.rollout_batch_episodes,
                                                    cfg.seed, cfg.rollout_batch)
    return res


def _unless_no_simulator(rollouts, *args) -> dict[str, Any]:
    """A rollout row, or {"skipped": why} where the simulator cannot run here."""
    try:
        return rollouts(*args)
    except Exception as e:  # no simulator here: say so
        return {"skipped": f"{type(e).__name__}: {e}"}


def _batch_observations(bm: BenchModel, obs, n: int, seed: int) -> tuple[list, str]:
    """(n observations for the batch rows, where they come from): Meta-World frames for tinyvla where the
    simulator runs, else the bench frame and random images."""
    if bm.benchmark_frames:
        try:
            return list(env_frames(bm.adapter, n, seed)), "Meta-World frames (consecutive steps of the first episodes)"
        except Exception as e:  # no simulator or no GL here
            note = f" (simulator unavailable: {type(e).__name__})"
    else:
        note = ""
    rng = np.random.default_rng(seed + 1)
    return [obs] + [random_observation(bm.adapter, bm.instruction, rng) for _ in range(n - 1)], f"the bench frame and random images{note}"


def machine(device: torch.device | None = None) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    out = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    if device is not None and device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        out |= {"gpu": props.name, "gpu_memory_bytes": int(props.total_memory), "cuda": torch.version.cuda}
    return out


def run_bench(cfg: BenchConfig = BenchConfig()) -> dict[str, Any]:
    """Run every measurement of `cfg`; returns {model name: {...}} (the JSON `dtp bench --json` prints)."""
    saved_threads = torch.get_num_threads()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    try:
        out: dict[str, Any] = {}
        for name in cfg.models:
            t0 = time.perf_counter()
            bm = build_model(name, cfg.seed, cfg.torch_device(), cfg.torch_dtype())
            log.info("bench %s: %s", bm.name, bm.note)
            res = (bm.bench or bench_model)(bm, cfg)
            res["machine"] = machine(cfg.torch_device())
            res["bench_seconds"] = time.perf_counter() - t0
            out[bm.name] = res
            del bm
        return out
    finally:
        torch.set_num_threads(saved_threads)
