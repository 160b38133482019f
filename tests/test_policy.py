"""The two-pass DTP loop end to end on a tiny random TinyVLA."""

import math

import numpy as np
import pytest
import torch

from dtp.config import DTPConfig
from dtp.policy import DTPPolicy


def test_dtp_off_runs_one_plain_pass(tiny_adapter, tiny_obs):
    res = DTPPolicy(tiny_adapter, DTPConfig(enabled=False)).step(tiny_obs)
    rec = res.record
    assert "pass2_s" not in rec.timings and "dtp_math_s" not in rec.timings
    assert rec.relevance is None and rec.n_pruned == 0
    assert res.action.shape == (4,) and np.all(np.abs(res.action) <= 1)
    assert rec.tokens == rec.tokens_pass1


def test_tau_inf_prunes_nothing_and_matches_baseline(tiny_adapter, tiny_obs):
    base = DTPPolicy(tiny_adapter, DTPConfig(enabled=False)).step(tiny_obs)
    res = DTPPolicy(tiny_adapter, DTPConfig(tau=math.inf)).step(tiny_obs)
    assert res.record.n_pruned == 0 and res.record.tokens == base.record.tokens
    np.testing.assert_array_equal(res.action, base.action)


def test_dtp_step_records_everything_and_prunes_outside_region(tiny_adapter, tiny_obs):
    res = DTPPolicy(tiny_adapter, DTPConfig(tau=0.2, k=0.25, sigma=1.0)).step(tiny_obs)
    rec = res.record
    h, w = tiny_adapter.model.config.grid
    for m in (rec.relevance, rec.region, rec.attention, rec.pruned):
        assert m.shape == (h, w)
    assert rec.n_region == round(0.25 * h * w)
    assert rec.n_pruned == int(rec.pruned.sum()) > 0
    assert not (rec.pruned & rec.region).any()
    assert "pass2_s" in rec.timings and rec.capture_bytes > 0
    assert 0 <= rec.irrelevant_fraction <= 1 and rec.margin > 0
    # pass 2 equals a direct generate with the same keep mask
    from dtp.models.base import Observation

    inputs = tiny_adapter.prepare(Observation.from_dict(tiny_obs))
    direct = tiny_adapter.generate(inputs, keep=~rec.pruned.flatten())
    assert direct.action_bins.tolist() == rec.tokens


def test_observe_mode_logs_attention_without_pruning(tiny_adapter, tiny_obs):
    base = DTPPolicy(tiny_adapter, DTPConfig(enabled=False)).step(tiny_obs)
    obs_rec = DTPPolicy(tiny_adapter, DTPConfig(enabled=False, tau=0.2), observe=True).step(tiny_obs).record
    assert obs_rec.tokens == base.record.tokens and obs_rec.n_pruned == 0
    assert obs_rec.attention is not None and not math.isnan(obs_rec.irrelevant_attention)
    assert obs_rec.distracting.any()  # what DTP would have pruned is still logged


@pytest.mark.parametrize("ablation", ["random_anywhere", "random_outside"])
def test_random_ablations_prune_dtps_count_and_repeat(tiny_adapter, tiny_obs, ablation):
    dtp = DTPPolicy(tiny_adapter, DTPConfig(tau=0.2)).step(tiny_obs).record
    runs = []
    for _ in range(2):
        pol = DTPPolicy(tiny_adapter, DTPConfig(tau=0.2, ablation=ablation, seed=7))
        pol.reset(seed=3)
        runs.append(pol.step(tiny_obs).record)
    assert runs[0].n_pruned == dtp.n_pruned
    assert torch.equal(runs[0].pruned, runs[1].pruned) and runs[0].tokens == runs[1].tokens
    if ablation == "random_outside":
        assert not (runs[0].pruned & runs[0].region).any()


def test_similarity_relevance_and_no_smoothing(tiny_adapter, tiny_obs):
    sim = DTPPolicy(tiny_adapter, DTPConfig(tau=0.2, relevance="similarity")).step(tiny_obs).record
    att = DTPPolicy(tiny_adapter, DTPConfig(tau=0.2)).step(tiny_obs).record
    assert not torch.allclose(sim.relevance, att.relevance)
    raw = DTPPolicy(tiny_adapter, DTPConfig(tau=0.2, ablation="no_smoothing")).step(tiny_obs).record
    from dtp import core

    assert torch.equal(raw.region, core.important_region(raw.relevance, 0.25, 0.0))


def test_same_inputs_same_numbers(tiny_adapter, tiny_obs):
    a = DTPPolicy(tiny_adapter, DTPConfig(tau=0.3)).step(tiny_obs).record
    b = DTPPolicy(tiny_adapter, DTPConfig(tau=0.3)).step(tiny_obs).record
    assert a.tokens == b.tokens and torch.equal(a.attention, b.attention)
