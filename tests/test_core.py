"""The paper's equations on hand-made maps with answers worked out by hand, plus properties."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dtp import core
from dtp.errors import AttentionError, ConfigError


def test_relevance_from_attention_is_mean_over_layers_heads_prompts():
    rows = torch.zeros(2, 2, 2, 4)  # (L, H, P, N)
    rows[0, 0, 0] = torch.tensor([0.4, 0.0, 0.0, 0.0])
    rows[1, 1, 1] = torch.tensor([0.0, 0.8, 0.0, 0.0])
    r = core.relevance_from_attention(rows, (2, 2))
    # 8 (layer, head, prompt) rows averaged: 0.4/8 and 0.8/8.
    assert torch.allclose(r, torch.tensor([[0.05, 0.1], [0.0, 0.0]]))


def test_relevance_from_similarity_known_cosines():
    prompt = torch.tensor([[[1.0, 0.0]]])  # (L=1, P=1, D=2)
    image = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [1.0, 1.0]]])  # (1, 4, 2)
    r = core.relevance_from_similarity(prompt, image, (2, 2))
    assert torch.allclose(r, torch.tensor([[1.0, 0.0], [-1.0, 1 / math.sqrt(2)]]), atol=1e-6)


def test_smoothing_off_is_identity_and_uniform_stays_uniform():
    r = torch.rand(5, 6)
    assert torch.equal(core.gaussian_smooth(r, 0.0), r)
    u = torch.full((5, 6), 0.3)
    assert torch.allclose(core.gaussian_smooth(u, 1.5), u)


def test_smoothing_spreads_a_centre_delta_symmetrically_and_keeps_mass():
    r = torch.zeros(15, 15)  # big enough that every touched cell has full kernel support
    r[7, 7] = 1.0
    s = core.gaussian_smooth(r, 1.0)
    assert s[7, 7] == s.max()
    assert torch.allclose(s, s.flip(0)) and torch.allclose(s, s.T)
    assert torch.isclose(s.sum(), torch.tensor(1.0), atol=1e-5)
    # separable Gaussian: the neighbour / centre ratio is exp(-1/2) for sigma = 1
    assert torch.isclose(s[7, 8] / s[7, 7], torch.tensor(math.exp(-0.5)), atol=1e-4)


def test_smoothing_moves_region_to_the_dense_cluster():
    r = torch.zeros(6, 6)
    r[0, 5] = 1.0  # a lone spike
    r[2:5, 1:4] = 0.8  # a 3x3 cluster
    g_raw = core.important_region(r, 1, sigma_patches=0)
    g_smooth = core.important_region(r, 1, sigma_patches=1.0)
    assert g_raw[0, 5] and not g_smooth[0, 5]
    assert g_smooth[3, 2]


def test_important_region_topk_and_fraction():
    r = torch.tensor([[0.1, 0.9, 0.2], [0.8, 0.0, 0.3]])
    g = core.important_region(r, 2, sigma_patches=0)
    assert g.tolist() == [[False, True, False], [True, False, False]]
    g = core.important_region(r, 0.5, sigma_patches=0)  # 3 of 6
    assert g.tolist() == [[False, True, False], [True, False, True]]


def test_layer_weights_are_image_mass_shares():
    rows = torch.zeros(2, 1, 3)  # (L, T, N)
    rows[0, 0] = torch.tensor([0.1, 0.1, 0.0])  # mass 0.2
    rows[1, 0] = torch.tensor([0.3, 0.0, 0.3])  # mass 0.6
    w = core.layer_weights(rows)
    assert torch.allclose(w[:, 0], torch.tensor([0.25, 0.75]))


def test_attention_map_eq4_by_hand():
    rows = torch.zeros(2, 2, 1, 4)  # (L, H, T, N), heads averaged first
    rows[0, :, 0] = torch.tensor([0.2, 0.0, 0.0, 0.0])  # layer 0 head-mean mass 0.2
    rows[1, 0, 0] = torch.tensor([0.0, 0.0, 0.0, 1.2])  # layer 1 head mean [0,0,0,0.6]
    a = core.attention_map(rows, (2, 2))
    # w = [0.25, 0.75]; A = 0.25*[0.2,0,0,0] + 0.75*[0,0,0,0.6]
    assert torch.allclose(a, torch.tensor([[0.05, 0.0], [0.0, 0.45]]))


def test_aggregation_modes():
    per = torch.tensor([[1.0, 0.0], [0.0, 3.0]])  # (T, N)
    assert core.aggregate_action_maps(per, "mean").tolist() == [0.5, 1.5]
    assert core.aggregate_action_maps(per, "max").tolist() == [1.0, 3.0]
    assert core.aggregate_action_maps(per, "sum").tolist() == [1.0, 3.0]
    assert core.aggregate_action_maps(per, "first").tolist() == [1.0, 0.0]
    with pytest.raises(ConfigError):
        core.aggregate_action_maps(per, "median")


def test_distracting_mask_eq5_by_hand():
    a = torch.tensor([[0.1, 0.5], [0.2, 0.05]])
    g = torch.tensor([[True, False], [False, False]])
    assert core.distracting_mask(a, g, 1.0).tolist() == [[False, True], [True, False]]
    assert core.distracting_mask(a, g, 3.0).tolist() == [[False, True], [False, False]]
    assert core.distracting_mask(a, g, 5.0).tolist() == [[False, False], [False, False]]  # 0.5 is not > 0.5
    assert not core.distracting_mask(a, g, math.inf).any()


def test_rule_margin_by_hand():
    a = torch.tensor([[0.1, 0.5], [0.2, 0.05]])
    g = torch.tensor([[True, False], [False, False]])
    assert math.isclose(float(core.rule_margin(a, g, 3.0)), 2.0, rel_tol=1e-6)  # 0.5/0.1 - 3
    assert float(core.rule_margin(a, g, 6.0)) < 0
    assert math.isnan(float(core.rule_margin(a, torch.ones(2, 2, dtype=torch.bool), 1.0)))


@pytest.mark.parametrize("tau", [-0.1, float("nan")])
def test_bad_tau_raises(tau):
    with pytest.raises(ConfigError):
        core.distracting_mask(torch.rand(2, 2), torch.zeros(2, 2, dtype=torch.bool), tau)


def test_k_larger_than_tokens_raises():
    with pytest.raises(ConfigError, match="between 1 and"):
        core.important_region(torch.rand(3, 3), 10)


def test_nan_rows_raise():
    rows = torch.rand(2, 2, 3, 4)
    rows[0, 0, 0, 0] = float("nan")
    with pytest.raises(AttentionError, match="NaN"):
        core.attention_map(rows, (2, 2))
    with pytest.raises(AttentionError, match="NaN"):
        core.relevance_from_attention(rows, (2, 2))


def test_random_prune_counts_and_seeding():
    g = torch.zeros(4, 4, dtype=torch.bool)
    g[:2, :2] = True
    d1 = core.random_prune_mask(g, 5, outside_region_only=True, generator=torch.Generator().manual_seed(3))
    d2 = core.random_prune_mask(g, 5, outside_region_only=True, generator=torch.Generator().manual_seed(3))
    assert torch.equal(d1, d2) and int(d1.sum()) == 5 and not (d1 & g).any()
    anywhere = [core.random_prune_mask(g, 8, outside_region_only=False, generator=torch.Generator().manual_seed(s)) for s in range(30)]
    assert all(int(d.sum()) == 8 for d in anywhere)
    assert any((d & g).any() for d in anywhere)  # anywhere may hit G


def test_irrelevant_attention_by_hand():
    a = torch.tensor([[0.1, 0.5], [0.2, 0.2]])
    g = torch.tensor([[True, False], [False, False]])
    outside, frac = core.irrelevant_attention(a, g)
    assert math.isclose(float(outside), 0.9, rel_tol=1e-6) and math.isclose(float(frac), 0.9, rel_tol=1e-6)


# ---- properties on random inputs ---------------------------------------------------------

grids = st.tuples(st.integers(2, 8), st.integers(2, 8))


@st.composite
def maps(draw):
    h, w = draw(grids)
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    r = torch.rand(h, w, generator=gen)
    a = torch.rand(h, w, generator=gen)
    k = draw(st.integers(1, h * w))
    sigma = draw(st.sampled_from([0.0, 0.5, 1.0, 2.0]))
    return r, a, k, sigma


@settings(max_examples=60, deadline=None)
@given(maps(), st.floats(0, 5, allow_nan=False))
def test_distracting_never_overlaps_region_and_region_has_k(m, tau):
    r, a, k, sigma = m
    g = core.important_region(r, k, sigma)
    d = core.distracting_mask(a, g, tau)
    assert int(g.sum()) == k
    assert not (g & d).any()
    assert core.gaussian_smooth(r, sigma).shape == r.shape


@settings(max_examples=60, deadline=None)
@given(maps(), st.floats(0, 3, allow_nan=False), st.floats(0, 3, allow_nan=False))
def test_larger_tau_never_prunes_more(m, t1, t2):
    r, a, k, sigma = m
    lo, hi = sorted((t1, t2))
    g = core.important_region(r, k, sigma)
    d_lo, d_hi = core.distracting_mask(a, g, lo), core.distracting_mask(a, g, hi)
    assert not (d_hi & ~d_lo).any()  # D(hi) is a subset of D(lo)
    assert not core.distracting_mask(a, g, math.inf).any()


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 5), st.integers(0, 2**31 - 1), st.floats(0, 2, allow_nan=False))
def test_batch_position_does_not_matter(batch, seed, tau):
    gen = torch.Generator().manual_seed(seed)
    rows = torch.rand(batch, 3, 2, 4, 16, generator=gen)  # (B, L, H, T, N)
    prompt = torch.rand(batch, 2, 2, 5, 16, generator=gen)  # (B, L_sel, H, P, N)
    r = core.relevance_from_attention(prompt, (4, 4))
    g = core.important_region(r, 4, 1.0)
    a = core.attention_map(rows, (4, 4))
    d = core.distracting_mask(a, g, tau)
    for i in range(batch):
        ri = core.relevance_from_attention(prompt[i], (4, 4))
        gi = core.important_region(ri, 4, 1.0)
        ai = core.attention_map(rows[i], (4, 4))
        assert torch.allclose(r[i], ri) and torch.equal(g[i], gi) and torch.allclose(a[i], ai)
        assert torch.equal(d[i], core.distracting_mask(ai, gi, tau))
