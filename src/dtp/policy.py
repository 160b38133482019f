"""DTPPolicy: the two-pass loop of DESIGN.md over any adapter.

pass 1 (capture) -> r -> G -> A -> D -> pass 2 (keep = ~D) -> decoded action.
With DTP disabled one plain pass runs through the same code (the baseline); `observe=True`
also captures during that pass so the baseline logs r, G, A and irrelevant attention.
`step_batch` runs B observations (each from its own EpisodeState) through one batched pass 1 and
one batched pass 2 over the samples that fired (dtp.batching, dtp.models.batch).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from . import batching, core, fast
from .config import DTPConfig
from .regions import region_source
from .robot_mask import MotionRobotMask, segmentation_robot_patches
from .errors import AttentionError, InputError, UnsupportedModelError
from .models.base import Generation, Observation, VLAAdapter
from .models.common import capture_spec_for

__all__ = ["DTPPolicy", "EpisodeState", "StepRecord", "StepResult"]


@dataclass
class StepRecord:
    """Everything DTP computed at one control step (maps are (h, w) tensors on the CPU)."""

    step: int
    relevance: torch.Tensor | None = None
    region: torch.Tensor | None = None  # G
    attention: torch.Tensor | None = None  # A
    pruned: torch.Tensor | None = None  # D actually pruned (DTP's or the ablation's)
    distracting: torch.Tensor | None = None  # D of Eq. 5 (same as pruned unless an ablation ran)
    robot: torch.Tensor | None = None  # the robot's patches that joined G (keep_robot; None when off)
    irrelevant_attention: float = float("nan")
    irrelevant_fraction: float = float("nan")
    margin: float = float("nan")
    n_pruned: int = 0
    n_region: int = 0
    tokens_pass1: list[int] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    action_pass1: np.ndarray | None = None
    action: np.ndarray | None = None
    entropy_pass1: float = float("nan")
    entropy: float = float("nan")
    capture_bytes: int = 0
    prompt_argmax: int = -1  # flat patch index of the largest prompt->image attention (-1: none captured)
    prompt_argmax_in_region: bool | None = None  # whether that patch lies in G
    grid: tuple[int, int] = (0, 0)  # (h, w) patches ((0, 0): no capture)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def fired(self) -> bool:
        return self.n_pruned > 0

    @property
    def action_changed(self) -> bool:
        if self.tokens != self.tokens_pass1:
            return True
        # continuous heads (pi0) have no tokens: compare the decoded actions
        return self.action is not None and self.action_pass1 is not None and not np.array_equal(self.action, self.action_pass1)

    @property
    def action_l2(self) -> float:
        if self.action is None or self.action_pass1 is None:
            return 0.0
        return float(np.linalg.norm(self.action - self.action_pass1))

    def scalars(self) -> dict[str, Any]:
        """Flat per-step values for a results table."""
        return {
            "step": self.step,
            "irrelevant_attention": self.irrelevant_attention,
            "irrelevant_fraction": self.irrelevant_fraction,
            "margin": self.margin,
            "n_pruned": self.n_pruned,
            "n_region": self.n_region,
            "fired": self.fired,
            "action_changed": self.action_changed,
            "action_l2": self.action_l2,
            "entropy_pass1": self.entropy_pass1,
            "entropy": self.entropy,
            "capture_bytes": self.capture_bytes,
            "prompt_argmax": self.prompt_argmax,
            "prompt_argmax_in_region": self.prompt_argmax_in_region,
            "grid_h": self.grid[0],
            "grid_w": self.grid[1],
            **({"n_robot": int(self.robot.sum())} if self.robot is not None else {}),
            **{f"t_{k}": v for k, v in self.timings.items()},
        }


@dataclass(frozen=True)
class PruneInputs:
    """What an ablation's pruning rule may read at one step (all (h, w), batch removed)."""

    config: DTPConfig
    region: torch.Tensor  # G, bool
    distracting: torch.Tensor  # D of Eq. 5, bool
    prompt_relevance: torch.Tensor | None  # prompt->image attention at the relevance layers (None: not captured)
    generator: torch.Generator  # seeded per (config seed, episode, step)


def _random_count(inp: PruneInputs, outside: bool) -> torch.Tensor:
    return core.random_prune_mask(inp.region, int(inp.distracting.sum()), outside_region_only=outside,
                                  generator=inp.generator)


def _top_attention_outside(inp: PruneInputs) -> torch.Tensor:
    if inp.prompt_relevance is None:
        raise AttentionError("ablation 'top_attention_outside' needs prompt->image rows; the adapter captured none")
    count = core.fraction_count(inp.region, inp.config.prune_fraction)
    return core.top_prune_mask(inp.prompt_relevance, inp.region, count)


# ablation name -> the tokens it prunes instead of Eq. 5's D ("none" and "no_smoothing" prune D)
PRUNERS: dict[str, Callable[[PruneInputs], torch.Tensor]] = {
    "random_anywhere": lambda inp: _random_count(inp, outside=False),
    "random_outside": lambda inp: _random_count(inp, outside=True),
    "random_fraction_outside": lambda inp: core.random_prune_mask(
        inp.region, core.fraction_count(inp.region, inp.config.prune_fraction), outside_region_only=True,
        generator=inp.generator),
    "top_attention_outside": _top_attention_outside,
}


@dataclass
class StepResult:
    action: np.ndarray
    record: StepRecord


@dataclass
class EpisodeState:
    """What a policy carries from one step of an episode to the next (one per episode, or per served client).

    seed: the episode's seed (the random ablations draw from (config seed, seed, step));
    step: steps taken so far; motion: the motion estimate's frames (keep_robot="motion"; None otherwise).
    """

    seed: int = 0
    step: int = 0
    motion: MotionRobotMask | None = None


def mean_entropy(logits: torch.Tensor) -> float:
    """Mean entropy (nats) of the action-token distributions (T, bins); NaN for a head without tokens."""
    if logits.numel() == 0:
        return float("nan")
    logp = torch.log_softmax(logits.float(), dim=-1)
    return float(-(logp.exp() * logp).sum(-1).mean())


class DTPPolicy:
    """`policy.reset(seed)` at each episode, then `policy.step(obs)` per control step."""

    def __init__(
        self, adapter: VLAAdapter, config: DTPConfig | None = None, *, observe: bool = False, pass2: str = "exact"
    ):
        """pass2: how pass 2 runs, one of fast.PASS2_MODES: "exact" (the paper's full rerun, default),
        "exact_prefix" (reuse pass 1's cache before the first pruned token; same result),
        "approx_image" (an approximation: also reuse the kept image tokens' cache). See dtp.fast."""
        self.adapter = adapter
        self.config = config or DTPConfig()
        self.observe = observe
        self.pass2 = fast.check_pass2_mode(pass2)
        if pass2 != "exact" and not fast.supports_reuse(adapter):
            raise UnsupportedModelError(f"pass2={pass2!r} is not available for {type(adapter).__name__}; use 'exact'")
        self.relevance_layers = self.config.resolve_layers(
            adapter.num_layers, getattr(adapter, "default_relevance_layers", None)
        )
        self.region_source = region_source(self.config.region)  # where G comes from (dtp.regions)
        self.episode = self.new_episode()  # the state `step` reads and advances
        # why the last step_batch ran as a per-sample loop (None: it ran batched; see dtp.batching)
        self.batch_fallback: str | None = None

    def new_episode(self, seed: int = 0) -> EpisodeState:
        """A fresh episode's state: pass one per observation to `step_batch` (e.g. one per served client)."""
        # where the robot is, for an embodiment-aware G (dtp.robot_mask; keep_robot "off" has none)
        motion = MotionRobotMask() if self.config.keep_robot == "motion" else None
        return EpisodeState(seed=int(seed), motion=motion)

    def reset(self, seed: int = 0) -> None:
        self.episode = self.new_episode(seed)
        reset_adapter = getattr(self.adapter, "reset", None)  # optional hook (pi0: reseeds its noise)
        if reset_adapter is not None:
            reset_adapter(seed)

    def select_action(self, obs: Observation | dict) -> np.ndarray:
        return self.step(obs).action

    def step(self, obs: Observation | dict) -> StepResult:
        return self._step_episode(obs, self.episode)

    def step_batch(self, observations: list[Observation | dict], episodes: list[EpisodeState] | None = None) -> list[StepResult]:
        """`step` on each observation, batched: one pass 1 over all, one pass 2 over the samples that fired.

        episodes[i] (from `new_episode`) is the episode observation i belongs to; each sample reads and
        advances its own, so results equal `step` of a policy in that episode state (same pruned set, same
        action tokens, logits within float rounding). episodes=None means `[self.episode]` and takes one
        observation. An adapter without `supports_batch` runs a per-sample loop instead: logged once,
        and `self.batch_fallback` names why (None after a batched call). With a pass2 reuse mode,
        each fired sample's pass 2 runs alone from its row of pass 1's shared cache (dtp.fast).
        Timings of a batched sample are the whole batch's wall times (it waited for all of it).
        """
        obs, episodes = batching.check_batch(observations, episodes, self.episode)
        if not obs:
            return []
        self.batch_fallback = batching.batch_refusal(self.adapter)
        if self.batch_fallback is not None:
            batching.announce_fallback(self.batch_fallback)
            return [self._step_episode(o, e) for o, e in zip(obs, episodes)]
        return self._step_batched(obs, episodes)

    def _step_batched(self, obs: list[Observation], episodes: list[EpisodeState]) -> list[StepResult]:
        cfg, adapter = self.config, self.adapter
        capture = cfg.enabled or self.observe
        recs = [StepRecord(step=e.step) for e in episodes]
        t0 = time.perf_counter()
        inputs = [adapter.prepare(o) for o in obs]
        t_prepare = time.perf_counter() - t0
        t0 = time.perf_counter()
        gens = adapter.generate_batch(
            inputs, capture=capture, relevance_layers=self.relevance_layers if capture else (),
            hidden_states=capture and self.region_source.needs_hidden_states,
        )
        t_pass1 = time.perf_counter() - t0
        for rec, gen, o, ep, inp in zip(recs, gens, obs, episodes, inputs):
            rec.timings.update(prepare_s=t_prepare, pass1_s=t_pass1)
            rec.tokens_pass1 = gen.action_bins.tolist()
            rec.action_pass1 = adapter.decode(gen.output)
            rec.entropy_pass1 = mean_entropy(gen.action_logits)
            if capture:
                t0 = time.perf_counter()
                self._analyse(gen, inp.layout.grid, rec, o, ep)
                rec.timings["dtp_math_s"] = time.perf_counter() - t0
        finals = list(gens)
        fired = [i for i, rec in enumerate(recs) if cfg.enabled and rec.n_pruned > 0]
        if fired:
            t0 = time.perf_counter()
            keeps = [core.keep_mask(recs[i].pruned) for i in fired]
            if self.pass2 == "exact":
                second = adapter.generate_batch([inputs[i] for i in fired], keeps=keeps)
            else:
                second = [fast.second_pass(adapter, inputs[i], gens[i], k, self.pass2) for i, k in zip(fired, keeps)]
            for i, gen in zip(fired, second):
                finals[i] = gen
                recs[i].timings["pass2_s"] = time.perf_counter() - t0
        out = []
        for rec, final, ep in zip(recs, finals, episodes):
            rec.tokens = final.action_bins.tolist()
            rec.action = adapter.decode(final.output)
            rec.entropy = mean_entropy(final.action_logits)
            ep.step += 1
            out.append(StepResult(action=rec.action, record=rec))
        return out

    def _step_episode(self, obs: Observation | dict, episode: EpisodeState) -> StepResult:
        if isinstance(obs, dict):
            obs = Observation.from_dict(obs)
        cfg = self.config
        rec = StepRecord(step=episode.step)
        t0 = time.perf_counter()
        inputs = self.adapter.prepare(obs)
        rec.timings["prepare_s"] = time.perf_counter() - t0
        capture = cfg.enabled or self.observe

        t0 = time.perf_counter()
        gen1: Generation = self.adapter.generate(
            inputs,
            capture=capture_spec_for(inputs.layout) if capture else None,
            relevance_layers=self.relevance_layers if capture else (),
            hidden_states=capture and self.region_source.needs_hidden_states,
        )
        rec.timings["pass1_s"] = time.perf_counter() - t0
        rec.tokens_pass1 = gen1.action_bins.tolist()
        rec.action_pass1 = self.adapter.decode(gen1.output)
        rec.entropy_pass1 = mean_entropy(gen1.action_logits)
        final = gen1

        if capture:
            t0 = time.perf_counter()
            self._analyse(gen1, inputs.layout.grid, rec, obs, episode)
            rec.timings["dtp_math_s"] = time.perf_counter() - t0
            if cfg.enabled and rec.n_pruned > 0:
                t0 = time.perf_counter()
                final = fast.second_pass(self.adapter, inputs, gen1, core.keep_mask(rec.pruned), self.pass2)
                rec.timings["pass2_s"] = time.perf_counter() - t0
        rec.tokens = final.action_bins.tolist()
        rec.action = self.adapter.decode(final.output)
        rec.entropy = mean_entropy(final.action_logits)
        episode.step += 1
        return StepResult(action=rec.action, record=rec)

    def _robot_patches(self, obs: Observation | None, grid: tuple[int, int], episode: EpisodeState) -> torch.Tensor:
        """(h, w) bool: the robot's patches from the configured source (dtp.robot_mask)."""
        if obs is None:
            raise InputError(f"keep_robot={self.config.keep_robot!r} reads the observation; pass it")
        if self.config.keep_robot == "segmentation":
            if obs.segmentation is None:
                raise InputError("keep_robot='segmentation' needs the simulator's segmentation with each observation "
                                 "(obs['segmentation']; dtp eval supplies it on the benchmark)")
            return segmentation_robot_patches(obs.segmentation, grid)
        return episode.motion.update(obs.image, grid)

    def _analyse(self, gen: Generation, grid: tuple[int, int], rec: StepRecord, obs: Observation | None = None,
                 episode: EpisodeState | None = None) -> None:
        """r, G, A, D and the diagnostics of one step into `rec`; `obs` feeds region sources that read it,
        `episode` (default: the policy's own) holds the step's episode state."""
        cfg = self.config
        episode = self.episode if episode is None else episode
        trace = gen.trace
        if trace is None:
            raise AttentionError("the adapter returned no trace from a capture pass")
        if obs is None and self.region_source.obs_field is not None:
            raise InputError(f"region={cfg.region!r} reads obs.{self.region_source.obs_field}; pass the observation")
        region = self.region_source.compute(obs, trace, grid, cfg)
        r, g = region.relevance, region.region
        if cfg.keep_robot != "off":
            rec.robot = self._robot_patches(obs, grid, episode)
            g = g | rec.robot  # embodiment-aware G: the robot's own patches are never distracting
        a = core.attention_map(trace.action_rows, grid, cfg.aggregation)
        d = core.distracting_mask(a, g, cfg.tau)
        prompt_r = core.relevance_from_attention(trace.prompt_rows, grid) if trace.prompt_rows is not None else None
        pruned = d
        pruner = PRUNERS.get(cfg.ablation)
        if pruner is not None:
            gen_seed = (cfg.seed * 1_000_003 + episode.seed * 10_007 + episode.step) % (2**63)
            pruned = pruner(PruneInputs(cfg, g, d, prompt_r, torch.Generator().manual_seed(gen_seed)))
        if prompt_r is not None:
            rec.prompt_argmax = int(torch.argmax(prompt_r.flatten()))  # first maximum
            rec.prompt_argmax_in_region = bool(g.flatten()[rec.prompt_argmax])
        outside, frac = core.irrelevant_attention(a, g)
        rec.relevance, rec.region, rec.attention = r, g, a
        rec.grid = (int(grid[0]), int(grid[1]))
        rec.distracting, rec.pruned = d, pruned
        rec.irrelevant_attention, rec.irrelevant_fraction = float(outside), float(frac)
        rec.margin = float(core.rule_margin(a, g, cfg.tau)) if np.isfinite(cfg.tau) else float("nan")
        rec.n_pruned = int(pruned.sum()) if cfg.enabled else 0
        rec.n_region = int(g.sum())
        rec.capture_bytes = trace.capture_bytes
