"""DTPPolicy.step_batch equals step per sample (issue 26): pruned set, action tokens, logits within 1e-4."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dtp.config import DTPConfig
from dtp.errors import InputError
from dtp.models.base import Observation
from dtp.policy import DTPPolicy

INSTRUCTIONS = ("push the red puck to the goal", "open drawer", "press the button", "reach target",
                "push the puck")
GRID = (6, 6)  # the tiny_adapter's patch grid (48 px / 8)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _obs(seed: int, instruction: str, fires: bool | None = None) -> Observation:
    """A random frame; with `fires` set, region="mask" gets a G that leaves patches out (fires) or covers all (not)."""
    rng = np.random.default_rng(seed)
    mask = None
    if fires is not None:
        mask = np.ones(GRID, dtype=bool)
        if fires:
            mask[:, : 1 + seed % 3] = False  # D lies in these columns (tau is small)
    return Observation(image=rng.integers(0, 256, (48, 48, 3), dtype=np.uint8), instruction=instruction,
                       proprio=rng.normal(size=4).astype(np.float32), region_mask=mask)


def _alone(adapter, cfg: DTPConfig, obs: Observation, seed: int, **kw):
    pol = DTPPolicy(adapter, cfg, **kw)
    pol.reset(seed)
    return pol.step(obs).record


def _assert_same(batched, alone) -> None:
    assert batched.tokens == alone.tokens and batched.tokens_pass1 == alone.tokens_pass1
    assert batched.n_pruned == alone.n_pruned and batched.step == alone.step
    for a, b in ((batched.pruned, alone.pruned), (batched.region, alone.region)):
        assert (a is None) == (b is None) and (a is None or torch.equal(a, b))
    if alone.attention is not None:
        torch.testing.assert_close(batched.attention, alone.attention, atol=1e-5, rtol=1e-4)
    np.testing.assert_array_equal(batched.action, alone.action)
    assert math.isclose(batched.entropy, alone.entropy, rel_tol=1e-4, abs_tol=1e-5) or (
        math.isnan(batched.entropy) and math.isnan(alone.entropy))


samples = st.lists(st.tuples(st.integers(0, 50), st.sampled_from(INSTRUCTIONS), st.booleans()), min_size=1, max_size=5)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(samples)
def test_batch_equals_step_over_compositions(tiny_adapter, batch):
    """All fire, none fire, mixed (region="mask" decides per sample), different instructions and lengths."""
    cfg = DTPConfig(region="mask", tau=0.2)
    obs = [_obs(seed, instr, fires) for seed, instr, fires in batch]
    pol = DTPPolicy(tiny_adapter, cfg)
    results = pol.step_batch(obs, [pol.new_episode(i) for i in range(len(obs))])
    assert pol.batch_fallback is None
    for i, (o, res, (_, _, fires)) in enumerate(zip(obs, results, batch)):
        assert res.record.fired == fires
        _assert_same(res.record, _alone(tiny_adapter, cfg, o, i))


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 50), st.sampled_from(INSTRUCTIONS)), min_size=2, max_size=4),
       st.sampled_from([0.2, 0.9, math.inf]))
def test_batch_equals_step_with_attention_regions(tiny_adapter, batch, tau):
    cfg = DTPConfig(tau=tau)
    obs = [_obs(seed, instr) for seed, instr in batch]
    pol = DTPPolicy(tiny_adapter, cfg)
    for o, res in zip(obs, pol.step_batch(obs, [pol.new_episode(3) for _ in obs])):
        _assert_same(res.record, _alone(tiny_adapter, cfg, o, 3))


@pytest.mark.parametrize("kw", [dict(cfg=DTPConfig(enabled=False)), dict(cfg=DTPConfig(enabled=False), observe=True),
                                dict(cfg=DTPConfig(tau=0.2, relevance="similarity")),
                                dict(cfg=DTPConfig(tau=0.2, ablation="random_outside", seed=5))])
def test_batch_equals_step_in_other_modes(tiny_adapter, kw):
    cfg = kw.pop("cfg")
    obs = [_obs(s, INSTRUCTIONS[s]) for s in range(4)]
    pol = DTPPolicy(tiny_adapter, cfg, **kw)
    for i, (o, res) in enumerate(zip(obs, pol.step_batch(obs, [pol.new_episode(i) for i in range(4)]))):
        _assert_same(res.record, _alone(tiny_adapter, cfg, o, i, **kw))


def test_batch_of_one_equals_step(tiny_adapter):
    cfg = DTPConfig(tau=0.2)
    o = _obs(1, INSTRUCTIONS[0])
    pol = DTPPolicy(tiny_adapter, cfg)
    (res,) = pol.step_batch([o])  # the policy's own episode
    assert pol.episode.step == 1
    _assert_same(res.record, _alone(tiny_adapter, cfg, o, 0))


def test_generate_batch_logits_equal_generate(tiny_adapter):
    """The adapter level: per-sample keep masks, logits within 1e-4 of each unbatched pass."""
    obs = [_obs(s, INSTRUCTIONS[s]) for s in range(4)]
    inputs = [tiny_adapter.prepare(o) for o in obs]
    gen = torch.Generator().manual_seed(0)
    keeps = [None] + [torch.rand(36, generator=gen) > 0.3 for _ in range(3)]
    for i, g in enumerate(tiny_adapter.generate_batch(inputs, keeps=keeps)):
        alone = tiny_adapter.generate(tiny_adapter.prepare(obs[i]), keep=keeps[i])
        assert g.action_bins.tolist() == alone.action_bins.tolist()
        torch.testing.assert_close(g.action_logits, alone.action_logits, atol=1e-4, rtol=0)


def test_episodes_stay_per_sample_with_the_motion_robot_mask(tiny_adapter):
    """keep_robot="motion" keeps frames per episode: two interleaved episodes equal two policies stepped alone."""
    cfg = DTPConfig(tau=0.2, keep_robot="motion")
    frames = {e: [_obs(10 * e + t, INSTRUCTIONS[e]) for t in range(3)] for e in range(2)}
    pol = DTPPolicy(tiny_adapter, cfg)
    eps = [pol.new_episode(e) for e in range(2)]
    batched = [pol.step_batch([frames[0][t], frames[1][t]], eps) for t in range(3)]
    for e in range(2):
        alone = DTPPolicy(tiny_adapter, cfg)
        alone.reset(e)
        for t in range(3):
            rec = alone.step(frames[e][t]).record
            _assert_same(batched[t][e].record, rec)
            assert torch.equal(batched[t][e].record.robot, rec.robot)
    assert [ep.step for ep in eps] == [3, 3]


def test_bad_batches_raise(tiny_adapter):
    pol = DTPPolicy(tiny_adapter, DTPConfig())
    o = _obs(0, INSTRUCTIONS[0])
    ep = pol.new_episode()
    with pytest.raises(InputError, match="episodes"):
        pol.step_batch([o, o])
    with pytest.raises(InputError, match="twice"):
        pol.step_batch([o, o], [ep, ep])
    with pytest.raises(InputError, match="one each"):
        pol.step_batch([o, o], [ep])
    assert pol.step_batch([], []) == []


class _NoBatch:
    """The tiny adapter without its batch capability."""

    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, name):
        if name in ("supports_batch", "generate_batch"):
            raise AttributeError(name)
        return getattr(self._inner, name)


def test_an_adapter_that_cannot_batch_falls_back_visibly(tiny_adapter, caplog):
    cfg = DTPConfig(tau=0.2)
    pol = DTPPolicy(_NoBatch(tiny_adapter), cfg)
    obs = [_obs(s, INSTRUCTIONS[s]) for s in range(2)]
    with caplog.at_level(logging.WARNING, logger="dtp.batching"):
        results = pol.step_batch(obs, [pol.new_episode(i) for i in range(2)])
        pol.step_batch(obs, [pol.new_episode(i) for i in range(2)])
    assert "does not batch" in pol.batch_fallback
    assert sum("does not batch" in r.message for r in caplog.records) <= 1  # once per reason per process
    for i, (o, res) in enumerate(zip(obs, results)):
        _assert_same(res.record, _alone(tiny_adapter, cfg, o, i))


@pytest.mark.parametrize("pass2", ["exact_prefix", "approx_image"])
def test_batch_with_a_pass2_reuse_mode_equals_step(tiny_adapter, pass2):
    """dtp.fast's modes: batched pass 1, each fired sample's pass 2 from its row of the shared cache."""
    cfg = DTPConfig(region="mask", tau=0.2)
    obs = [_obs(s, INSTRUCTIONS[s], fires=s != 1) for s in range(4)]
    pol = DTPPolicy(tiny_adapter, cfg, pass2=pass2)
    results = pol.step_batch(obs, [pol.new_episode(i) for i in range(4)])
    assert pol.batch_fallback is None and [r.record.fired for r in results] == [True, False, True, True]
    for i, (o, res) in enumerate(zip(obs, results)):
        _assert_same(res.record, _alone(tiny_adapter, cfg, o, i, pass2=pass2))
