"""Region sources (attention, similarity, oracle, mask): known answers, properties and errors."""

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dtp import core, regions
from dtp.config import DTPConfig
from dtp.errors import ConfigError, InputError
from dtp.policy import DTPPolicy

GRID = (6, 6)  # the tiny adapter: 48 px images, 8 px patches


# -- pixels -> patches ------------------------------------------------------------------------
def test_pixels_to_patches_known_answer():
    m = torch.zeros(4, 4, dtype=torch.bool)
    m[0, 0] = True  # 1 of patch (0, 0)'s 4 pixels
    m[2:4, 2:4] = True  # all of patch (1, 1)
    m[2, 1] = m[3, 1] = True  # half of patch (1, 0)
    assert core.pixels_to_patches(m, (2, 2)).tolist() == [[True, False], [True, True]]
    assert core.pixels_to_patches(m, (2, 2), min_share=0.5).tolist() == [[False, False], [True, True]]
    assert core.pixels_to_patches(m, (2, 2), min_share=1.0).tolist() == [[False, False], [False, True]]


def test_pixels_to_patches_uneven_split():
    # 5 rows on 2 patch rows: rows 0-1 and 2-4 (floor(i * 5 / 2)); columns alike
    m = torch.zeros(5, 5, dtype=torch.bool)
    m[2, 0] = True
    assert core.pixels_to_patches(m, (2, 2)).tolist() == [[False, False], [True, False]]
    m = torch.zeros(5, 5, dtype=torch.bool)
    m[1, 4] = True
    assert core.pixels_to_patches(m, (2, 2)).tolist() == [[False, True], [False, False]]


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4), st.integers(1, 4), st.integers(1, 5), st.integers(1, 5), st.data())
def test_pixels_to_patches_equals_block_any_and_batches(h, w, ph, pw, data):
    bits = data.draw(st.lists(st.booleans(), min_size=2 * h * ph * w * pw, max_size=2 * h * ph * w * pw))
    m = torch.tensor(bits).reshape(2, h * ph, w * pw)
    blocks = m.reshape(2, h, ph, w, pw)
    assert torch.equal(core.pixels_to_patches(m, (h, w)), blocks.any(dim=(2, 4)))
    assert torch.equal(core.pixels_to_patches(m, (h, w), min_share=1.0), blocks.all(dim=(2, 4)))
    assert torch.equal(core.pixels_to_patches(m[1], (h, w)), core.pixels_to_patches(m, (h, w))[1])


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 4), st.integers(1, 4), st.integers(0, 6), st.integers(0, 6), st.data())
def test_pixels_to_patches_is_monotone_for_any_size(h, w, extra_h, extra_w, data):
    big_h, big_w = h + extra_h, w + extra_w
    a = torch.tensor(data.draw(st.lists(st.booleans(), min_size=big_h * big_w, max_size=big_h * big_w))).reshape(big_h, big_w)
    more = a | (torch.rand(big_h, big_w, generator=torch.Generator().manual_seed(big_h * 7 + big_w)) > 0.7)
    pa, pm = core.pixels_to_patches(a, (h, w)), core.pixels_to_patches(more, (h, w))
    assert not (pa & ~pm).any()  # a bigger mask never loses a patch
    assert pa.any() == bool(a.any())  # every pixel belongs to some patch


def test_pixels_to_patches_errors():
    with pytest.raises(InputError, match="smaller than"):
        core.pixels_to_patches(torch.ones(3, 8, dtype=torch.bool), (4, 4))
    with pytest.raises(ConfigError, match="min_share"):
        core.pixels_to_patches(torch.ones(8, 8, dtype=torch.bool), (4, 4), min_share=0.0)


# -- empty G ------------------------------------------------------------------------------------
@pytest.mark.parametrize("tau", [0.0, 0.5, 1.0, 3.0])
def test_empty_region_prunes_nothing(tau):
    a = torch.rand(2, 3, 3)
    g = torch.zeros(2, 3, 3, dtype=torch.bool)
    g[1, 0, 0] = True  # batch item 1 has a region, item 0 none
    d = core.distracting_mask(a, g, tau)
    assert not d[0].any()
    assert torch.equal(d[1], core.distracting_mask(a[1], g[1], tau))
    m = core.rule_margin(a, g, tau)
    assert math.isnan(float(m[0])) and not math.isnan(float(m[1]))
    outside, frac = core.irrelevant_attention(a, g)
    assert math.isnan(float(outside[0])) and math.isnan(float(frac[0]))
    assert math.isclose(float(outside[1]), float(a[1].sum() - a[1, 0, 0]), rel_tol=1e-6)


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 5), st.integers(1, 5), st.floats(0, 3), st.data())
def test_eq5_by_definition_for_any_nonempty_region(h, w, tau, data):
    a = torch.tensor(data.draw(st.lists(st.floats(0, 1), min_size=h * w, max_size=h * w))).reshape(h, w)
    g = torch.tensor(data.draw(st.lists(st.booleans(), min_size=h * w, max_size=h * w))).reshape(h, w)
    g.view(-1)[data.draw(st.integers(0, h * w - 1))] = True
    a_m = max(a[i, j] for i in range(h) for j in range(w) if g[i, j])
    threshold = float(tau * a_m)  # in A's float32, as the rule computes it (a float64 product can differ in the last bit)
    expect = [[(not g[i, j]) and float(a[i, j]) > threshold for j in range(w)] for i in range(h)]
    assert core.distracting_mask(a, g, tau).tolist() == expect


# -- config: region with relevance as its alias -------------------------------------------------
def test_region_and_its_alias():
    assert DTPConfig().region == DTPConfig().relevance == "attention"
    assert DTPConfig(relevance="similarity") == DTPConfig(region="similarity")
    assert DTPConfig(region="oracle", relevance="oracle").region == "oracle"
    assert DTPConfig(region="oracle").replace(tau=2.0).region == "oracle"
    assert DTPConfig().replace(relevance="similarity").region == "similarity"
    assert DTPConfig(relevance="similarity").replace(region="mask").relevance == "mask"
    d = DTPConfig(region="oracle").to_dict()
    assert d["region"] == "oracle" and "relevance" not in d
    assert DTPConfig.from_dict(d) == DTPConfig(region="oracle")
    old = {k: v for k, v in DTPConfig().to_dict().items() if k != "region"} | {"relevance": "similarity"}
    assert DTPConfig.from_dict(old).region == "similarity"  # run folders written before `region`


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"region": "saliency"}, "region must be one of"),
        ({"relevance": "gradcam"}, "relevance must be one of"),
        ({"region": "oracle", "relevance": "attention"}, "conflict"),
        ({"region": ["oracle"]}, "region must be one of"),
    ],
)
def test_bad_region(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        DTPConfig(**kwargs)


def test_registry_lists_the_four_sources():
    assert regions.region_sources()[:4] == ("attention", "similarity", "oracle", "mask")
    assert regions.region_source("similarity").needs_hidden_states
    assert regions.region_source("oracle").obs_field == "segmentation"
    with pytest.raises(ConfigError, match="region must be one of"):
        regions.region_source("nope")


def test_segmentation_labels_match_the_env():
    from dtp.envs import metaworld_env as mw

    meta_world = {"background": mw.BACKGROUND, "task_object": mw.TASK_OBJECT, "goal": mw.GOAL, "gripper": mw.GRIPPER,
                  "distractor": mw.DISTRACTOR, "lookalike": mw.LOOKALIKE, "robot": mw.ROBOT}
    assert {k: regions.SEGMENTATION_LABELS[k] for k in meta_world} == meta_world
    # the labels LIBERO adds (robot, added) take numbers Meta-World does not use
    assert len(set(regions.SEGMENTATION_LABELS.values())) == len(regions.SEGMENTATION_LABELS)


# -- attention / similarity: today's numbers -----------------------------------------------------
def test_attention_and_similarity_regions_are_todays(tiny_adapter, tiny_obs):
    for old, new in ((DTPConfig(tau=0.2), DTPConfig(tau=0.2, region="attention")),
                     (DTPConfig(tau=0.2, relevance="similarity"), DTPConfig(tau=0.2, region="similarity"))):
        a = DTPPolicy(tiny_adapter, old).step(tiny_obs).record
        b = DTPPolicy(tiny_adapter, new).step(tiny_obs).record
        assert torch.equal(a.relevance, b.relevance) and torch.equal(a.region, b.region)
        assert torch.equal(a.pruned, b.pruned) and a.tokens == b.tokens
        assert torch.equal(b.region, core.important_region(b.relevance, 0.25, 1.0))


# -- oracle -------------------------------------------------------------------------------------
def _segmentation() -> tuple[np.ndarray, torch.Tensor]:
    """A 48 x 48 label map and the oracle G it must give on the 6 x 6 grid."""
    seg = np.zeros((48, 48), dtype=np.uint8)
    expect = torch.zeros(GRID, dtype=torch.bool)
    seg[8:40, 0:32] = 1  # task object: patches rows 1-4, cols 0-3 (16 patches, more than k = 9)
    expect[1:5, 0:4] = True
    seg[47, 47] = 2  # goal: one pixel of patch (5, 5)
    expect[5, 5] = True
    seg[0:3, 44:46] = 3  # gripper: a corner of patch (0, 5)
    expect[0, 5] = True
    seg[0:8, 0:16] = 4  # distractor: patches (0, 0), (0, 1), not in G
    return seg, expect


def test_oracle_region_known_answer_not_capped_at_k(tiny_adapter, tiny_obs):
    seg, expect = _segmentation()
    cfg = DTPConfig(tau=0.2, region="oracle")
    rec = DTPPolicy(tiny_adapter, cfg).step({**tiny_obs, "segmentation": seg}).record
    assert torch.equal(rec.region, expect) and rec.n_region == 18 > core.resolve_k(0.25, 36)
    assert torch.equal(rec.relevance, expect.float())
    assert torch.equal(rec.distracting, core.distracting_mask(rec.attention, expect, 0.2))
    assert not (rec.pruned & expect).any()
    # k and sigma size a ranked map; the oracle's given region ignores them
    other = DTPPolicy(tiny_adapter, cfg.replace(k=3, sigma=0.0)).step({**tiny_obs, "segmentation": seg}).record
    assert torch.equal(other.region, expect)


def test_oracle_with_nothing_visible_prunes_nothing(tiny_adapter, tiny_obs):
    seg = np.full((48, 48), 4, dtype=np.uint8)  # only distractors
    base = DTPPolicy(tiny_adapter, DTPConfig(enabled=False)).step(tiny_obs).record
    rec = DTPPolicy(tiny_adapter, DTPConfig(tau=0.0, region="oracle")).step({**tiny_obs, "segmentation": seg}).record
    assert rec.n_region == 0 and rec.n_pruned == 0 and rec.tokens == base.tokens
    assert math.isnan(rec.margin) and math.isnan(rec.irrelevant_fraction)


def test_oracle_removal_prunes_exactly_the_distractor_only_patches(tiny_adapter, tiny_obs):
    seg = np.zeros((48, 48), dtype=np.uint8)  # 6x6 patches of 8x8 pixels
    seg[0:8, 0:16] = 4  # patches (0, 0), (0, 1): a distractor alone
    seg[8:16, 8:16] = 5  # patch (1, 1): a lookalike ...
    seg[12, 12] = 1  # ... with one pixel of the task object: kept
    seg[40:48, 40:48] = 7  # patch (5, 5): an added distractor
    seg[24:32, 24:32] = 6  # patch (3, 3): the robot, kept
    expect = torch.zeros(6, 6, dtype=torch.bool)
    expect[0, 0] = expect[0, 1] = expect[5, 5] = True
    assert torch.equal(~regions.removal_region(seg, (6, 6)), expect)
    rec = DTPPolicy(tiny_adapter, DTPConfig(tau=0.0, region="oracle_removal")).step({**tiny_obs, "segmentation": seg}).record
    assert torch.equal(rec.pruned, expect) and rec.n_pruned == 3
    with pytest.raises(InputError, match="region='oracle_removal' needs the simulator's segmentation"):
        DTPPolicy(tiny_adapter, DTPConfig(tau=0.0, region="oracle_removal")).step(tiny_obs)


def test_a_sweep_runs_oracle_removal_at_tau_zero():
    from dtp.eval.runner import sweep_configs

    cfgs = sweep_configs([0.5, 1.0], ablations=("oracle_removal", "oracle"))
    assert cfgs["oracle_removal@tau=0"].tau == 0.0 and cfgs["oracle@tau=1"].region == "oracle"


@pytest.mark.parametrize(
    "seg,match",
    [
        (None, "needs the simulator's segmentation"),
        (np.zeros((48, 40), dtype=np.uint8), "segmentation is 48x40"),
        (np.zeros((48, 48), dtype=np.float32), "integer label map"),
        (np.zeros((48, 48, 1), dtype=np.uint8), "integer label map"),
    ],
)
def test_oracle_errors(tiny_adapter, tiny_obs, seg, match):
    obs = dict(tiny_obs) if seg is None else {**tiny_obs, "segmentation": seg}
    with pytest.raises(InputError, match=match):
        DTPPolicy(tiny_adapter, DTPConfig(region="oracle")).step(obs)


def test_oracle_unneeded_when_nothing_is_captured(tiny_adapter, tiny_obs):
    # the baseline without observation computes no region, so it needs no segmentation
    res = DTPPolicy(tiny_adapter, DTPConfig(enabled=False, region="oracle")).step(tiny_obs)
    assert res.record.region is None


# -- mask ---------------------------------------------------------------------------------------
def test_mask_patch_and_pixel_forms(tiny_adapter, tiny_obs):
    patch = np.zeros(GRID, dtype=bool)
    patch[2:4, 1:5] = True
    pol = DTPPolicy(tiny_adapter, DTPConfig(tau=0.2, region="mask"))
    rec = pol.step({**tiny_obs, "region_mask": patch}).record
    assert rec.region.tolist() == patch.tolist()
    assert torch.equal(rec.distracting, core.distracting_mask(rec.attention, torch.from_numpy(patch), 0.2))
    # a detector's pixel box inside those patches, touching each of them, gives the same G
    pixels = np.zeros((48, 48), dtype=bool)
    pixels[20:25, 15:33] = True  # rows 2-3 (16-31 px), cols 1-4 (8-39 px)
    assert pol.step({**tiny_obs, "region_mask": pixels}).record.region.tolist() == patch.tolist()
    assert pol.step({**tiny_obs, "region_mask": torch.from_numpy(patch)}).record.region.tolist() == patch.tolist()


def test_empty_mask_prunes_nothing(tiny_adapter, tiny_obs):
    base = DTPPolicy(tiny_adapter, DTPConfig(enabled=False)).step(tiny_obs).record
    for ablation in ("none", "random_anywhere", "random_outside"):
        rec = DTPPolicy(tiny_adapter, DTPConfig(tau=0.0, region="mask", ablation=ablation)).step(
            {**tiny_obs, "region_mask": np.zeros(GRID, dtype=bool)}).record
        assert rec.n_region == 0 and rec.n_pruned == 0 and rec.tokens == base.tokens


@pytest.mark.parametrize(
    "mask,match",
    [
        (None, "needs a mask"),
        (np.zeros((5, 6), dtype=bool), r"shape \(5, 6\); give the patch grid \(6, 6\) or the image's pixels \(48, 48\)"),
        (np.zeros((48, 47), dtype=bool), "shape"),
        (np.zeros(GRID, dtype=np.float32), "must be bool"),
        (np.zeros(GRID, dtype=np.uint8), "must be bool"),
    ],
)
def test_mask_errors(tiny_adapter, tiny_obs, mask, match):
    obs = dict(tiny_obs) if mask is None else {**tiny_obs, "region_mask": mask}
    with pytest.raises(InputError, match=match):
        DTPPolicy(tiny_adapter, DTPConfig(region="mask")).step(obs)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])  # obs is only read
@given(st.lists(st.booleans(), min_size=36, max_size=36), st.sampled_from([0.0, 0.3, 1.0]),
       st.sampled_from(["none", "random_outside", "no_smoothing"]))
def test_rule_and_ablations_over_any_mask(tiny_adapter, tiny_obs, bits, tau, ablation):
    g = torch.tensor(bits).reshape(GRID)
    cfg = DTPConfig(tau=tau, region="mask", ablation=ablation, seed=1)
    rec = DTPPolicy(tiny_adapter, cfg).step({**tiny_obs, "region_mask": g.numpy()}).record
    d = core.distracting_mask(rec.attention, g, tau)
    assert torch.equal(rec.region, g) and torch.equal(rec.distracting, d)
    assert rec.n_pruned == int(d.sum()) and not (rec.pruned & g).any()
    if ablation != "random_outside":
        assert torch.equal(rec.pruned, d)


def test_a_registered_source_is_selected_by_name(tiny_adapter, tiny_obs, monkeypatch):
    def centre(obs, trace, grid, config):
        g = torch.zeros(grid, dtype=torch.bool)
        g[2:4, 2:4] = True
        return regions.Region(region=g, relevance=g.float())

    monkeypatch.setitem(regions._SOURCES, "centre", regions.RegionSource("centre", centre))
    rec = DTPPolicy(tiny_adapter, DTPConfig(tau=0.2, region="centre")).step(tiny_obs).record
    assert int(rec.region.sum()) == 4 and rec.region[2:4, 2:4].all()
