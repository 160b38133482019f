"""Token-removal robustness: the pruning rules' known answers, their config checks, the policy's
dispatch, and the sink statistic on hand-made maps."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dtp import core
from dtp.analysis.sinks import argmax_patches, sink_statistic
from dtp.config import DTPConfig
from dtp.errors import ConfigError, InputError
from dtp.policy import PRUNERS, PruneInputs


def test_fraction_count_known_answers():
    g = torch.zeros(4, 4, dtype=torch.bool)
    g[0, :2] = True  # 14 tokens outside
    assert core.fraction_count(g, 0.25) == 4  # round(3.5) = 4 (half to even)
    assert core.fraction_count(g, 1.0) == 14
    assert core.fraction_count(torch.ones(2, 2, dtype=torch.bool), 0.5) == 0
    assert core.fraction_count(torch.zeros(2, 5, dtype=torch.bool), 0.25) == 2  # round(2.5) = 2
    with pytest.raises(ConfigError, match="fraction"):
        core.fraction_count(g, 1.5)


def test_top_prune_mask_takes_the_highest_outside_g():
    score = torch.tensor([[9.0, 1.0, 5.0], [7.0, 3.0, 5.0]])
    g = torch.tensor([[True, False, False], [False, False, False]])  # the 9 is inside G
    d = core.top_prune_mask(score, g, 3)
    # outside G: 7 (1,0), then the tie 5 at (0,2) and (1,2): both taken
    assert d.tolist() == [[False, False, True], [True, False, True]]
    d2 = core.top_prune_mask(score, g, 2)  # the tie breaks to the lower flat index
    assert d2.tolist() == [[False, False, True], [True, False, False]]
    assert core.top_prune_mask(score, g, 99).sum() == 5 and not core.top_prune_mask(score, g, 99)[0, 0]
    assert core.top_prune_mask(score, g, 0).sum() == 0
    with pytest.raises(InputError, match="shape"):
        core.top_prune_mask(score, g.T, 1)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(0, 30))
def test_top_prune_mask_properties(seed, count):
    gen = torch.Generator().manual_seed(seed)
    score = torch.rand(5, 6, generator=gen)
    g = torch.rand(5, 6, generator=gen) < 0.3
    d = core.top_prune_mask(score, g, count)
    assert int(d.sum()) == min(count, int((~g).sum())) and not (d & g).any()
    if d.any() and (~g & ~d).any():  # every pruned score >= every kept score outside G
        assert score[d].min() >= score[~g & ~d].max()


def test_config_takes_and_checks_prune_fraction():
    c = DTPConfig(ablation="random_fraction_outside", prune_fraction=0.5, region="oracle")
    assert c.prune_fraction == 0.5 and DTPConfig.from_dict(c.to_dict()) == c
    assert DTPConfig(ablation="top_attention_outside").prune_fraction == 0.25
    for bad in (0.0, 1.5, float("nan"), True, "0.2"):
        with pytest.raises(ConfigError, match="prune_fraction"):
            DTPConfig(prune_fraction=bad)


def _inputs(ablation, seed=0, relevance=True):
    g = torch.zeros(4, 4, dtype=torch.bool)
    g[1:3, 1:3] = True  # 12 outside
    r = torch.arange(16, dtype=torch.float32).reshape(4, 4)
    cfg = DTPConfig(ablation=ablation, prune_fraction=0.25, region="oracle")
    d = torch.zeros(4, 4, dtype=torch.bool)
    return PruneInputs(cfg, g, d, r if relevance else None, torch.Generator().manual_seed(seed))


def test_pruners_known_answers():
    top = PRUNERS["top_attention_outside"](_inputs("top_attention_outside"))
    assert torch.nonzero(top.flatten()).flatten().tolist() == [13, 14, 15]  # 3 = 25% of 12, the largest r
    rand = PRUNERS["random_fraction_outside"](_inputs("random_fraction_outside"))
    assert int(rand.sum()) == 3 and not rand[1:3, 1:3].any()
    again = PRUNERS["random_fraction_outside"](_inputs("random_fraction_outside"))
    assert torch.equal(rand, again)  # seeded
    other = [PRUNERS["random_fraction_outside"](_inputs("random_fraction_outside", seed=s)) for s in range(1, 6)]
    assert any(not torch.equal(rand, o) for o in other)
    from dtp.errors import AttentionError

    with pytest.raises(AttentionError, match="prompt->image"):
        PRUNERS["top_attention_outside"](_inputs("top_attention_outside", relevance=False))


def test_argmax_patches_and_sink_statistic_known_answers():
    maps = torch.zeros(5, 2, 3)
    maps[0, 0, 2] = maps[1, 0, 2] = maps[2, 0, 2] = 1.0  # patch 2 (row 0, col 2) in 3 of 5 frames
    maps[3, 1, 0] = 1.0  # patch 3
    # frame 4 all zero: first maximum, patch 0
    idx = argmax_patches(maps)
    assert idx == [2, 2, 2, 3, 0]
    s = sink_statistic(idx, (2, 3), [False, False, True, True, None])
    assert s["top_patch"] == 2 and (s["top_row"], s["top_col"]) == (0, 2)
    assert s["top_share"] == pytest.approx(0.6) and s["sink"] and s["distinct"] == 3
    assert s["top_in_region_share"] == pytest.approx(1 / 3)
    assert s["argmax_in_region_share"] == pytest.approx(0.5)  # 2 of the 4 known frames
    assert s["most_common"] == [[2, 3], [0, 1], [3, 1]]
    flat = sink_statistic([0, 1, 2, 3], (2, 2))
    assert flat["top_share"] == 0.25 and not flat["sink"] and flat["top_patch"] == 0
    assert math.isnan(flat["top_in_region_share"])
    with pytest.raises(InputError, match="grid"):
        sink_statistic([4], (2, 2))
    with pytest.raises(InputError, match="at least one"):
        sink_statistic([], (2, 2))
    with pytest.raises(InputError, match="frames"):
        argmax_patches(torch.zeros(2, 2))
