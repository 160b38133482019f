"""`dtp bench`: what DTP costs per control step, against the plain model and the naive way.

Per model, in one process, interleaved round-robin so that every variant sees the same machine
load, after warm-up rounds, medians over repeats:

  (a) plain      DTPPolicy(DTPConfig(enabled=False)).step: one SDPA pass, no capture
  (b) capture    pass 1 with AttentionCapture (prepare + generate + decode, no DTP math)
  (c) dtp        DTPPolicy.step with a tau that prunes: capture + r, G, A, D + pass 2 (paper: "exact")
  (c) dtp_*      the same with the fast pass 2 of dtp.fast ("exact_prefix"; "approx_image", approximate)
  (d) naive      eager attention with output_attentions=True in pass 1, the same DTP math on the full
                 attention matrices, pass 2 in eager too (what a port without the capture would do)

Memory is counted two ways, and neither is RSS:
  - bytes held: the captured rows (AttentionCapture.nbytes) against the attention tensors the naive
    pass returns (L x H x S x S floats for the prefill, plus one row per layer and head per decode step);
  - peak tensor bytes: torch.profiler's CPU allocator events during one step, summed in time order:
    the most bytes of tensors alive at once above what was alive when the step began (weights excluded).

Also, where the simulator and the shipped model exist: how often the approximate pass 2 picks the same
action tokens as the exact one on benchmark frames, and rollout throughput with and without DTP.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import statistics
import sys
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import torch
from transformers import DynamicCache

from . import core
from .config import DTPConfig
from .errors import CheckpointError, ConfigError
from .models.base import Generation, Observation, PreparedInputs, Trace
from .models.common import capture_spec_for, greedy_action_decode, padding_mask_with_holes
from .policy import DTPPolicy, StepRecord, mean_entropy

__all__ = [
    "BenchConfig",
    "MODEL_NAMES",
    "TARGETS",
    "run_bench",
    "format_report",
    "add_bench_parser",
    "run_bench_cli",
]

log = logging.getLogger(__name__)

MODEL_NAMES = ("tinyvla", "vla-12L-768", "tiny")
DEFAULT_MODELS = ("tinyvla", "vla-12L-768")
TAU_LADDER = (1.0, 0.7, 0.5, 0.3, 0.2, 0.1, 0.05, 0.0)
TARGETS = {"capture_ratio": 1.05, "dtp_ratio": 2.1, "capture_fraction": 0.01}
FALLBACK_INSTRUCTION = "push the puck to the goal"
# 20 words: the prompt of the Llama-sized model is 20 tokens long.
TWENTY_WORDS = "pick up the small red block on the left side of the table and place it inside the blue box".split()


@dataclass(frozen=True)
class BenchConfig:
    """What `dtp bench` measures. models: names from MODEL_NAMES. repeats / warmup: timed / untimed
    rounds; min_seconds: more rounds until the slowest variant has that much timed. tau: None picks the largest tau of
    TAU_LADDER that prunes on the bench frame. threads: torch threads (None: torch's default).
    agreement_steps: frames on which approx_image is compared with exact (the "tinyvla" model only).
    episodes: rollouts per setting (DTP off / on) for the throughput table ("tinyvla", needs dtp.envs)."""

    models: tuple[str, ...] = DEFAULT_MODELS
    repeats: int = 5
    warmup: int = 2
    min_seconds: float = 2.0
    threads: int | None = None
    seed: int = 0
    tau: float | None = None
    memory: bool = True
    agreement_steps: int = 200
    episodes: int = 2

    def __post_init__(self) -> None:
        unknown = [m for m in self.models if m not in MODEL_NAMES]
        if unknown or not self.models:
            raise ConfigError(f"unknown bench model(s) {unknown}; choose from {MODEL_NAMES}")
        if self.repeats < 1 or self.warmup < 0 or self.min_seconds < 0:
            raise ConfigError(
                f"repeats must be >= 1, warmup and min_seconds >= 0, got {self.repeats}, {self.warmup}, {self.min_seconds}"
            )
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1, got {self.threads}")
        if self.tau is not None and (math.isnan(self.tau) or self.tau < 0):
            raise ConfigError(f"tau must be >= 0, got {self.tau}")
        if self.agreement_steps < 0 or self.episodes < 0:
            raise ConfigError("agreement_steps and episodes must be >= 0")


# -- models -----------------------------------------------------------------------------------


@dataclass
class BenchModel:
    name: str
    adapter: Any
    instruction: str
    note: str
    shipped: bool = False


def _random_tinyvla(cfg, words: list[str], seed: int):
    from .models.llama_vla import LlamaVLAAdapter
    from .tinyvla import TinyVLA, build_word_tokenizer

    torch.manual_seed(seed)
    return LlamaVLAAdapter(TinyVLA(cfg).eval(), build_word_tokenizer(words))


def _env_words() -> tuple[str, list[str]]:
    """An instruction of the benchmark and every word its instructions use (fallbacks without dtp.envs)."""
    try:
        from .envs.tasks import all_instruction_words, instruction_for

        return instruction_for("push", 0), all_instruction_words()
    except Exception:  # the simulator package is optional for the bench
        return FALLBACK_INSTRUCTION, FALLBACK_INSTRUCTION.split()


def build_model(name: str, seed: int = 0) -> BenchModel:
    """The bench models. "tinyvla": the shipped checkpoint, or a random TinyVLA of the default config
    when it is missing (said in `note`); "vla-12L-768": random weights, 12 layers x 768, 16x16 = 256
    image tokens, 20 prompt tokens, 7 action tokens; "tiny": the test-sized model."""
    from .tinyvla import TinyVLAConfig

    if name == "tinyvla":
        from . import models

        instruction, words = _env_words()
        try:
            return BenchModel(name, models.load("tinyvla"), instruction, "shipped checkpoint", shipped=True)
        except CheckpointError as e:
            note = f"RANDOM TinyVLA of the default config (shipped checkpoint missing: {e})"
            return BenchModel(name, _random_tinyvla(TinyVLAConfig(), words, seed), instruction, note)
    if name == "vla-12L-768":
        cfg = TinyVLAConfig(
            image_size=224, patch_size=14, vision_width=256, hidden_size=768, num_layers=12, num_heads=12,
            intermediate_size=2048, num_words=64, action_dims=7, max_positions=512,
        )
        adapter = _random_tinyvla(cfg, TWENTY_WORDS, seed)
        return BenchModel(name, adapter, " ".join(TWENTY_WORDS), "random weights, Llama 12 layers x 768, 12 heads")
    if name == "tiny":
        cfg = TinyVLAConfig(
            image_size=48, patch_size=8, vision_width=32, hidden_size=64, num_layers=3, num_heads=4,
            intermediate_size=128, num_words=32,
        )
        words = FALLBACK_INSTRUCTION.split()
        return BenchModel(name, _random_tinyvla(cfg, words, seed), FALLBACK_INSTRUCTION, "random weights, test size")
    raise ConfigError(f"unknown bench model {name!r}; choose from {MODEL_NAMES}")


def _shape_of(adapter, inputs: PreparedInputs) -> dict[str, int]:
    lay = inputs.layout
    cfg = adapter.lm.config
    return {
        "layers": int(cfg.num_hidden_layers),
        "heads": int(cfg.num_attention_heads),
        "width": int(cfg.hidden_size),
        "seq_len": int(lay.seq_len),
        "image_tokens": lay.num_image_tokens,
        "prompt_tokens": int(lay.prompt_positions.numel()),
        "action_tokens": int(adapter.n_action_tokens),
    }


def _random_observation(adapter, instruction: str, rng: np.random.Generator) -> Observation:
    size = adapter.model.config.image_size
    proprio = rng.normal(size=adapter.model.config.proprio_dims).astype(np.float32)
    return Observation(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), instruction, proprio)


def _env_frames(adapter, n: int, seed: int) -> Iterator[Observation]:
    """Meta-World frames at the model's image size: a few tasks and seeds, the scripted expert acting,
    every step's frame. Raises ImportError (or the env's error) when the simulator is unavailable."""
    from .envs import TASKS, make_env

    size = adapter.model.config.image_size
    tasks = list(TASKS)
    produced, episode = 0, 0
    while produced < n:
        env = make_env(tasks[episode % len(tasks)], image_size=size, variant="plain")  # as docs/performance.md measured
        try:
            obs, _ = env.reset(seed=seed + episode)
            for _ in range(env.max_steps):
                yield Observation.from_dict(obs)
                produced += 1
                if produced >= n:
                    return
                obs, _, terminated, truncated, _ = env.step(env.expert_action())
                if terminated or truncated:
                    break
        finally:
            env.close()
        episode += 1


# -- the naive reference ----------------------------------------------------------------------


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
    s = layout.seq_len
    mask = padding_mask_with_holes(s, layout, None)
    cache = DynamicCache(config=lm.config)
    attentions: list[tuple[torch.Tensor, ...]] = []  # per forward: L x (1, H, q, k)
    state = {"mask": mask}

    def prefill() -> torch.Tensor:
        out = lm(inputs_embeds=embeds, attention_mask=mask, position_ids=torch.arange(s).unsqueeze(0), cache=cache,
                 use_cache=True, output_attentions=True, logits_to_keep=1)
        attentions.append(out.attentions)
        return out.logits[0, -1]

    def step(token: torch.Tensor, t: int) -> torch.Tensor:
        state["mask"] = torch.cat([state["mask"], torch.ones(1, 1, dtype=torch.long)], dim=1)
        out = lm(input_ids=token, attention_mask=state["mask"], position_ids=torch.tensor([[s + t]]), cache=cache,
                 use_cache=True, output_attentions=True)
        attentions.append(out.attentions)
        return out.logits[0, -1]

    with _attention_implementation(lm.config, "eager"):
        bins, logits = greedy_action_decode(prefill, step, adapter.model.action_token_ids(), adapter.n_action_tokens)
    img, prompt = layout.image_positions, layout.prompt_positions
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
    """(b): the policy's pass 1 with the capture on, and nothing after it but decoding the action."""
    adapter = policy.adapter
    inputs = adapter.prepare(obs)
    gen = adapter.generate(inputs, capture=capture_spec_for(inputs.layout), relevance_layers=policy.relevance_layers)
    adapter.decode(gen.action_bins)
    mean_entropy(gen.action_logits)  # as (a) does
    return gen


# -- measuring --------------------------------------------------------------------------------


def time_interleaved(
    fns: dict[str, Callable[[], Any]], repeats: int, warmup: int, min_seconds: float = 0.0
) -> dict[str, list[float]]:
    """Seconds per call of each fn, run round-robin (order rotated each round) after `warmup` rounds;
    at least `repeats` timed rounds, more until the slowest fn has `min_seconds` of timed calls."""
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    r = 0
    while r < warmup + repeats or max(sum(v) for v in times.values()) < min_seconds:
        order = names[r % len(names):] + names[: r % len(names)]
        for n in order:
            t0 = time.perf_counter()
            fns[n]()
            dt = time.perf_counter() - t0
            if r >= warmup:
                times[n].append(dt)
        r += 1
    return times


@contextmanager
def _quiet_stderr_fd() -> Iterator[None]:
    """Silence fd 2 (kineto prints start/stop lines from C++) for the duration of the block only."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def peak_tensor_bytes(fn: Callable[[], Any]) -> int:
    """Most bytes of CPU tensors alive at once during fn(), above those alive when it started.

    From torch.profiler's allocator events ([memory] events, signed sizes, summed in time order).
    """
    from torch.profiler import ProfilerActivity, profile

    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with _quiet_stderr_fd():
            prof.start()
        try:
            fn()
        finally:
            with _quiet_stderr_fd():
                prof.stop()
    events = [(e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    live = peak = 0
    for _, nbytes in sorted(events):
        live += nbytes
        peak = max(peak, live)
    return int(peak)


def count_work(fn: Callable[[], Any]) -> tuple[int, int]:
    """(FLOPs, aten ops) of one call of fn, counted by torch's dispatcher, not timed.

    FLOPs: torch.utils.flop_counter for matmuls and convolutions, plus 4 B H Sq Sk d per fused
    attention call (half that with is_causal and Sq == Sk), which the flop counter skips on the CPU.
    aten ops: top-level operator calls, what eager mode launches one kernel (or so) each for on a GPU.
    """
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import FlopCounterMode

    class _Work(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.ops = 0
            self.attention_flops = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            self.ops += 1
            if "scaled_dot_product" in func.__name__:
                bound = dict(zip((a.name for a in func._schema.arguments), args)) | kwargs
                q, k = bound["query"], bound["key"]
                b, h, sq, d = q.shape
                sk = k.shape[-2]
                full = 4 * b * h * sq * sk * d
                self.attention_flops += full // 2 if bound.get("is_causal") and sq == sk else full
            return func(*args, **kwargs)

    with FlopCounterMode(display=False) as flops, _Work() as work:
        fn()
    return int(flops.get_total_flops()) + work.attention_flops, work.ops


def _pick_tau(adapter, obs: Observation, requested: float | None) -> tuple[float, int]:
    ladder = (requested,) if requested is not None else TAU_LADDER
    n = 0
    for tau in ladder:
        n = DTPPolicy(adapter, DTPConfig(tau=tau)).step(obs).record.n_pruned
        if n > 0:
            return float(tau), n
    return float(ladder[-1]), n


def _agreement(adapter, cfg: DTPConfig, steps: int, seed: int, instruction: str) -> dict[str, Any]:
    """Do the fast pass-2 modes pick the same action tokens as the exact one, step by step?"""
    from . import fast

    policy = DTPPolicy(adapter, cfg)
    source = "Meta-World frames (scripted expert rollouts over the task list)"
    try:
        frames = list(_env_frames(adapter, steps, seed))
    except Exception as e:  # no simulator or no GL: say so and use random images
        rng = np.random.default_rng(seed)
        frames = [_random_observation(adapter, instruction, rng) for _ in range(steps)]
        source = f"random images (simulator unavailable: {type(e).__name__}: {e})"
    same = {"exact_prefix": 0, "approx_image": 0}
    max_dlogit = {"exact_prefix": 0.0, "approx_image": 0.0}
    fired = 0
    for obs in frames:
        inputs = adapter.prepare(obs)
        spec = capture_spec_for(inputs.layout)
        gen1 = adapter.generate(inputs, capture=spec, relevance_layers=policy.relevance_layers)
        rec = StepRecord(step=0)
        policy._analyse(gen1, inputs.layout.grid, rec)
        if rec.n_pruned == 0:
            continue
        fired += 1
        keep = core.keep_mask(rec.pruned)
        outs = {}
        for mode in same:  # each pass 2 consumes its pass 1's cache: run pass 1 again for each
            again = adapter.generate(inputs, capture=spec, relevance_layers=policy.relevance_layers)
            outs[mode] = fast.second_pass(adapter, inputs, again, keep, mode)
        exact = fast.second_pass(adapter, inputs, gen1, keep, "exact")
        for mode, out in outs.items():
            same[mode] += out.action_bins.tolist() == exact.action_bins.tolist()
            max_dlogit[mode] = max(max_dlogit[mode], float((out.action_logits - exact.action_logits).abs().max()))
    return {
        "steps": len(frames),
        "steps_pruned": fired,
        "source": source,
        "tau": cfg.tau,
        **{f"{m}_same_actions": same[m] for m in same},
        **{f"{m}_agreement": (same[m] / fired if fired else None) for m in same},
        **{f"{m}_max_logit_diff": max_dlogit[m] for m in same},
    }


def _rollout_loop(policy: DTPPolicy, env, seed: int) -> tuple[float, float, int, int]:
    """The evaluation loop when dtp.eval is not there: (model seconds, env seconds, steps, steps pruned)."""
    obs, _ = env.reset(seed=seed)
    policy.reset(seed)
    model_s = env_s = 0.0
    steps = fired = 0
    while True:
        t0 = time.perf_counter()
        res = policy.step(obs)
        model_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        obs, _, terminated, truncated, _ = env.step(res.action)
        env_s += time.perf_counter() - t0
        steps += 1
        fired += res.record.fired
        if terminated or truncated:
            return model_s, env_s, steps, fired


def _render_seconds(env, n: int = 20) -> float:
    """Median seconds of one env.render() (the same renderer env.step uses for its observation)."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        env.render()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _throughput(adapter, cfg: DTPConfig, episodes: int, seed: int) -> dict[str, Any]:
    """Rollouts of "push" with DTP off and on: env steps/s, episodes/min, time per step split into
    model (policy.step), render and physics (env.step = physics + rendering the next frame; rendering
    is timed on its own on each episode's final state and subtracted), other (env build, reset)."""
    from .envs import make_env

    try:
        from .eval.episode import run_episode
    except ImportError:  # dtp.eval not there yet: the same loop, here
        run_episode = None
    size = adapter.model.config.image_size
    out: dict[str, Any] = {"rollout": "dtp.eval.episode.run_episode" if run_episode else "dtp.bench loop", "task": "push"}
    for label, dtp_cfg in (("off", DTPConfig(enabled=False)), ("on", cfg)):
        policy = DTPPolicy(adapter, dtp_cfg)
        model_s = env_s = render_s = probe_s = 0.0
        steps = fired = 0
        t_all = time.perf_counter()
        for ep in range(episodes):
            env = make_env("push", image_size=size, variant="plain")  # as docs/performance.md measured
            try:
                if run_episode is not None:
                    res = run_episode(policy, env, seed + ep)
                    m, e, n = res.seconds["policy_s"], res.seconds["env_s"], res.length
                    f = sum(bool(row.get("fired")) for row in res.steps)
                else:
                    m, e, n, f = _rollout_loop(policy, env, seed + ep)
                t0 = time.perf_counter()
                per_frame = _render_seconds(env)
                probe_s += time.perf_counter() - t0
            finally:
                env.close()
            model_s, env_s, render_s = model_s + m, env_s + e, render_s + per_frame * n
            steps, fired = steps + n, fired + f
        wall = time.perf_counter() - t_all - probe_s
        out[label] = {
            "episodes": episodes,
            "steps": steps,
            "steps_pruned": fired,
            "steps_per_s": steps / wall,
            "episodes_per_min": 60 * episodes / wall,
            "model_s_per_step": model_s / steps,
            "render_s_per_step": render_s / steps,
            "physics_s_per_step": max(0.0, (env_s - render_s) / steps),
            "other_s_per_step": max(0.0, (wall - model_s - env_s) / steps),
        }
    return out


def bench_model(bm: BenchModel, cfg: BenchConfig) -> dict[str, Any]:
    adapter = bm.adapter
    rng = np.random.default_rng(cfg.seed)
    obs = _random_observation(adapter, bm.instruction, rng)
    frame_source = "random image"
    if bm.name == "tinyvla":  # the model trained on these frames sees one; random weights see noise
        try:
            obs = next(_env_frames(adapter, 1, cfg.seed))
            frame_source = "Meta-World frame (first reset of the first task)"
        except Exception as e:  # no simulator or no GL here
            frame_source = f"random image (simulator unavailable: {type(e).__name__})"
    tau, n_pruned = _pick_tau(adapter, obs, cfg.tau)
    dtp_cfg = DTPConfig(tau=tau)
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
    log.info("%s: tau=%g prunes %d tokens; timing %d variants x %d rounds", bm.name, tau, n_pruned, len(fns),
             cfg.warmup + cfg.repeats)
    times = time_interleaved(fns, cfg.repeats, cfg.warmup, cfg.min_seconds)
    med = {n: statistics.median(v) for n, v in times.items()}
    fastest = {n: min(v) for n, v in times.items()}

    inputs = adapter.prepare(obs)
    shape = _shape_of(adapter, inputs)
    rec = dtp.step(obs).record
    naive_rec = naive_step(dtp, obs)
    gen1 = capture_step(dtp, obs)
    l, h, s = shape["layers"], shape["heads"], shape["seq_len"]
    naive_formula = l * h * s * s * 4
    plan = None
    if rec.n_pruned:
        from .fast import reuse_plan

        plan = reuse_plan(inputs.layout, core.keep_mask(rec.pruned), "exact_prefix")
    res: dict[str, Any] = {
        "note": bm.note,
        "frame": frame_source,
        "instruction": obs.instruction,
        **shape,
        "tau": tau,
        "tokens_pruned": rec.n_pruned,
        "exact_prefix_reused_tokens": int(plan.cached.numel()) if plan is not None else 0,
        "naive_same_pruned": bool(torch.equal(naive_rec.pruned, rec.pruned)),
        "naive_same_actions": naive_rec.tokens == rec.tokens,
        **{f"{n}_ms": 1e3 * m for n, m in med.items()},
        **{f"{n}_iqr_ms": 1e3 * _iqr(v) for n, v in times.items()},
        **{f"{n}_min_ms": 1e3 * m for n, m in fastest.items()},
        # the same ratios from the fastest call of each: other processes only ever add time
        "ratios_of_min": {n: fastest[n] / fastest["plain"] for n in fastest},
        "timed_rounds": len(times["plain"]),
        "capture_ratio": med["capture"] / med["plain"],
        "dtp_ratio": med["dtp"] / med["plain"],
        "dtp_exact_prefix_ratio": med["dtp_exact_prefix"] / med["plain"],
        "dtp_approx_image_ratio": med["dtp_approx_image"] / med["plain"],
        "naive_ratio": med["naive"] / med["plain"],
        "capture_bytes": int(gen1.trace.capture_bytes),
        "naive_attention_bytes": naive_formula,
        "naive_attention_bytes_held": int(naive_rec.capture_bytes),
        "threads": torch.get_num_threads(),
        "repeats": cfg.repeats,
        "min_seconds": cfg.min_seconds,
        "warmup": cfg.warmup,
    }
    res["capture_fraction"] = res["capture_bytes"] / naive_formula
    for n, fn in fns.items():
        res[f"{n}_flops"], res[f"{n}_aten_ops"] = count_work(fn)
    if cfg.memory:
        log.info("%s: peak tensor memory of each variant (profiler)", bm.name)
        for n, fn in fns.items():
            res[f"{n}_peak_tensor_bytes"] = peak_tensor_bytes(fn)
    res["targets"] = {
        "capture_ratio<=1.05": res["capture_ratio"] <= TARGETS["capture_ratio"],
        "dtp_ratio<=2.1": res["dtp_ratio"] <= TARGETS["dtp_ratio"],
        "capture_bytes<=1%naive": res["capture_fraction"] <= TARGETS["capture_fraction"],
    }
    if bm.name == "tinyvla" and cfg.agreement_steps:
        log.info("%s: pass-2 agreement on %d frames", bm.name, cfg.agreement_steps)
        res["agreement"] = _agreement(adapter, dtp_cfg, cfg.agreement_steps, cfg.seed, bm.instruction)
        res["agreement"]["weights"] = "shipped checkpoint" if bm.shipped else "random (flat logits: agreement means little)"
    if bm.name == "tinyvla" and cfg.episodes:
        log.info("%s: rollout throughput, %d episodes with DTP off and on", bm.name, cfg.episodes)
        try:
            res["throughput"] = _throughput(adapter, dtp_cfg, cfg.episodes, cfg.seed)
        except Exception as e:  # no simulator here: say so
            res["throughput"] = {"skipped": f"{type(e).__name__}: {e}"}
    return res


def _iqr(v: list[float]) -> float:
    if len(v) < 2:
        return 0.0
    q = statistics.quantiles(v, n=4)
    return q[2] - q[0]


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def run_bench(cfg: BenchConfig = BenchConfig()) -> dict[str, Any]:
    """Run every measurement of `cfg`; returns {model name: {...}} (the JSON `dtp bench --json` prints)."""
    saved_threads = torch.get_num_threads()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    try:
        out: dict[str, Any] = {}
        for name in cfg.models:
            t0 = time.perf_counter()
            bm = build_model(name, cfg.seed)
            log.info("bench %s: %s", name, bm.note)
            res = bench_model(bm, cfg)
            res["machine"] = machine()
            res["bench_seconds"] = time.perf_counter() - t0
            out[name] = res
        return out
    finally:
        torch.set_num_threads(saved_threads)


# -- report -----------------------------------------------------------------------------------

ROWS = (
    ("plain", "(a) plain: SDPA, no capture"),
    ("capture", "(b) pass 1 + capture"),
    ("dtp", "(c) DTP step, pass2=exact"),
    ("dtp_exact_prefix", "    DTP step, pass2=exact_prefix"),
    ("dtp_approx_image", "    DTP step, pass2=approx_image*"),
    ("naive", "(d) naive: eager + output_attentions"),
)


def _kb(n: int) -> str:
    return f"{n / 1024:,.1f} KiB" if n < 1024**2 else f"{n / 1024**2:,.2f} MiB"


def format_report(results: dict[str, Any]) -> str:
    lines = []
    for name, r in results.items():
        m = r["machine"]
        lines.append(f"== {name}: {r['note']}")
        lines.append(
            f"   {r['layers']} layers x {r['width']} wide, {r['heads']} heads; sequence {r['seq_len']} = "
            f"{r['image_tokens']} image + {r['prompt_tokens']} prompt + BOS + proprio; {r['action_tokens']} action tokens"
        )
        lines.append(
            f"   tau={r['tau']:g} prunes {r['tokens_pruned']}/{r['image_tokens']} image tokens "
            f"(exact_prefix reuses {r['exact_prefix_reused_tokens']} positions); frame: {r['frame']}"
        )
        lines.append(
            f"   CPU: {m['cpu']}, {m['cpu_count']} cores (1-min load {m['load_average_1min']:.1f}), torch {m['torch']} "
            f"with {r['threads']} threads; {r['timed_rounds']} interleaved rounds after {r['warmup']} warm-up rounds"
        )
        head = (f"   {'variant':40s} {'median ms':>10s} {'IQR ms':>8s} {'x (a)':>7s} {'min ms':>8s} {'x (a)':>6s}"
                f" {'GFLOP':>7s} {'aten ops':>8s}")
        if "plain_peak_tensor_bytes" in r:
            head += f" {'peak tensors':>14s}"
        lines.append(head)
        for key, label in ROWS:
            ratio = r[f"{key}_ms"] / r["plain_ms"]
            row = (f"   {label:40s} {r[f'{key}_ms']:10.1f} {r[f'{key}_iqr_ms']:8.1f} {ratio:7.2f}"
                   f" {r[f'{key}_min_ms']:8.1f} {r['ratios_of_min'][key]:6.2f}"
                   f" {r[f'{key}_flops'] / 1e9:7.3f} {r[f'{key}_aten_ops']:8d}")
            if f"{key}_peak_tensor_bytes" in r:
                row += f" {_kb(r[f'{key}_peak_tensor_bytes']):>14s}"
            lines.append(row)
        lines.append("   * approx_image is an approximation (kept image tokens keep pass 1's keys/values)")
        lines.append(
            f"   held attention: capture {_kb(r['capture_bytes'])} vs naive L x H x S x S = {_kb(r['naive_attention_bytes'])}"
            f" ({100 * r['capture_fraction']:.2f}%); naive returned {_kb(r['naive_attention_bytes_held'])} in all"
        )
        lines.append(
            f"   naive reference prunes the same tokens: {r['naive_same_pruned']}, same actions: {r['naive_same_actions']}"
        )
        t = r["targets"]
        lines.append(
            "   targets: "
            + "; ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in t.items())
            + f" (b/a {r['capture_ratio']:.3f}, c/a {r['dtp_ratio']:.3f}, capture {100 * r['capture_fraction']:.2f}%)"
        )
        if "agreement" in r:
            a = r["agreement"]
            lines.append(
                f"   approx_image vs exact on {a['steps']} frames ({a['steps_pruned']} pruned), {a['source']}, "
                f"{a['weights']} weights: "
                f"same actions {a['approx_image_same_actions']}/{a['steps_pruned']} "
                f"(max logit diff {a['approx_image_max_logit_diff']:.3g}); exact_prefix same "
                f"{a['exact_prefix_same_actions']}/{a['steps_pruned']} (max logit diff {a['exact_prefix_max_logit_diff']:.2g})"
            )
        if "throughput" in r:
            tp = r["throughput"]
            if "skipped" in tp:
                lines.append(f"   rollout throughput skipped: {tp['skipped']}")
            else:
                for label in ("off", "on"):
                    x = tp[label]
                    lines.append(
                        f"   rollouts DTP {label:3s}: {x['steps_per_s']:.1f} env steps/s, {x['episodes_per_min']:.2f} "
                        f"episodes/min over {x['episodes']} episodes ({x['steps']} steps, pass 2 ran on "
                        f"{x['steps_pruned']}); per step: model "
                        f"{1e3 * x['model_s_per_step']:.1f} ms, render {1e3 * x['render_s_per_step']:.1f} ms, physics "
                        f"{1e3 * x['physics_s_per_step']:.1f} ms, other {1e3 * x['other_s_per_step']:.1f} ms"
                    )
                lines.append(f"   (rollouts of {tp['task']} by {tp['rollout']}; render = median of 20 env.render() on each "
                             "episode's last state, physics = env.step - render)")
        lines.append("")
    return "\n".join(lines)


# -- command line -----------------------------------------------------------------------------


def add_bench_parser(subparsers) -> argparse.ArgumentParser:
    """Register `dtp bench` on an argparse subparsers object; returns the parser."""
    p = subparsers.add_parser(
        "bench",
        help="time and memory of DTP per control step vs the plain model and the naive reference",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--models", default=",".join(DEFAULT_MODELS), help=f"comma-separated, from {', '.join(MODEL_NAMES)}")
    p.add_argument("--repeats", type=int, default=BenchConfig.repeats, help="timed rounds (medians are reported)")
    p.add_argument("--warmup", type=int, default=BenchConfig.warmup, help="untimed rounds first")
    p.add_argument("--min-seconds", type=float, default=BenchConfig.min_seconds,
                   help="keep timing rounds until the slowest variant has this many seconds of calls")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tau", type=float, default=None, help="DTP tau (default: the largest of a ladder that prunes)")
    p.add_argument("--no-memory", action="store_true", help="skip the profiler's peak-tensor measurement")
    p.add_argument("--agreement-steps", type=int, default=BenchConfig.agreement_steps,
                   help="frames on which approx_image is compared with exact (tinyvla)")
    p.add_argument("--episodes", type=int, default=BenchConfig.episodes,
                   help="rollouts per setting for the throughput line (tinyvla, needs the simulator)")
    p.add_argument("--json", action="store_true", help="also print one JSON object on the last line")
    p.set_defaults(func=run_bench_cli)
    return p


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    return BenchConfig(
        models=tuple(m.strip() for m in args.models.split(",") if m.strip()),
        repeats=args.repeats,
        warmup=args.warmup,
        min_seconds=args.min_seconds,
        threads=args.threads,
        seed=args.seed,
        tau=args.tau,
        memory=not args.no_memory,
        agreement_steps=args.agreement_steps,
        episodes=args.episodes,
    )


def run_bench_cli(args: argparse.Namespace) -> int:
    try:
        cfg = config_from_args(args)
    except ConfigError as e:
        print(f"dtp bench: {e}")
        return 2
    results = run_bench(cfg)
    print(format_report(results))
    if args.json:
        print(json.dumps(results, default=_json_default))
    return 0


def _json_default(x: Any) -> Any:
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def main(argv: list[str] | None = None) -> int:
    """`python -m dtp.bench ...` until the CLI wires `dtp bench`."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    parser = argparse.ArgumentParser(prog="dtp")
    sub = parser.add_subparsers(dest="command", required=True)
    add_bench_parser(sub)
    args = parser.parse_args(["bench", *(argv if argv is not None else sys.argv[1:])])
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
