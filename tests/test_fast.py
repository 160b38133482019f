"""The fast pass 2: reusing pass 1's cache before the first pruned token changes nothing."""

import numpy as np
import pytest
import torch

from dtp import fast
from dtp.config import DTPConfig
from dtp.errors import ConfigError, UnsupportedModelError
from dtp.models.base import Observation, TokenLayout
from dtp.models.common import capture_spec_for
from dtp.policy import DTPPolicy


def observations(n, size=48, seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        yield {
            "image": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
            "instruction": "push the red puck to the goal",
            "proprio": rng.normal(size=4).astype(np.float32),
        }


@pytest.mark.parametrize("tau", [0.1, 0.3, 0.6])
def test_exact_prefix_equals_the_plain_two_pass_dtp(tiny_adapter, tau):
    fired = 0
    for obs in observations(4):
        plain = DTPPolicy(tiny_adapter, DTPConfig(tau=tau)).step(obs).record
        quick = DTPPolicy(tiny_adapter, DTPConfig(tau=tau), pass2="exact_prefix").step(obs).record
        assert quick.tokens == plain.tokens and torch.equal(quick.pruned, plain.pruned)
        np.testing.assert_array_equal(quick.action, plain.action)
        assert abs(quick.entropy - plain.entropy) < 1e-5
        fired += plain.fired
    assert fired > 0  # the comparison exercised pass 2


def test_exact_prefix_logits_match_a_masked_rerun(tiny_adapter):
    for i, obs in enumerate(observations(5, seed=1)):
        inputs = tiny_adapter.prepare(Observation.from_dict(obs))
        gen1 = tiny_adapter.generate(inputs, capture=capture_spec_for(inputs.layout), relevance_layers=(1,))
        keep = torch.rand(inputs.layout.num_image_tokens, generator=torch.Generator().manual_seed(i)) > 0.3
        quick = fast.second_pass(tiny_adapter, inputs, gen1, keep, "exact_prefix")
        exact = fast.second_pass(tiny_adapter, inputs, gen1, keep, "exact")
        assert quick.action_bins.tolist() == exact.action_bins.tolist()
        assert (quick.action_logits - exact.action_logits).abs().max() < 1e-5
        assert quick.extras["exact"] and quick.extras["reused_tokens"] >= 1
        # pass 2 consumed pass 1's cache (one KV cache alive at a time); a fresh pass 1 repeats the numbers
        assert gen1.reuse is None
        with pytest.raises(UnsupportedModelError, match="consumed"):
            fast.second_pass(tiny_adapter, inputs, gen1, keep, "exact_prefix")
        gen1 = tiny_adapter.generate(inputs, capture=capture_spec_for(inputs.layout), relevance_layers=(1,))
        again = fast.second_pass(tiny_adapter, inputs, gen1, keep, "exact_prefix")
        assert torch.equal(again.action_logits, quick.action_logits)


def test_approx_image_runs_and_is_labelled_an_approximation(tiny_adapter, tiny_obs):
    inputs = tiny_adapter.prepare(Observation.from_dict(tiny_obs))
    gen1 = tiny_adapter.generate(inputs, capture=capture_spec_for(inputs.layout), relevance_layers=(1,))
    keep = torch.ones(inputs.layout.num_image_tokens, dtype=torch.bool)
    keep[3:9] = False
    approx = fast.second_pass(tiny_adapter, inputs, gen1, keep, "approx_image")
    layout = inputs.layout
    assert not approx.extras["exact"]
    assert approx.extras["computed_tokens"] == layout.seq_len - 1 - int(layout.image_positions.max())
    assert approx.action_bins.shape == (tiny_adapter.n_action_tokens,)
    # with nothing pruned the image cache is exactly pass 1's, so the approximation is exact
    full = torch.ones_like(keep)
    gen1 = tiny_adapter.generate(inputs, capture=capture_spec_for(inputs.layout), relevance_layers=(1,))
    same = fast.second_pass(tiny_adapter, inputs, gen1, full, "approx_image")
    assert same.action_bins.tolist() == gen1.action_bins.tolist()
    assert (same.action_logits - gen1.action_logits).abs().max() < 1e-5


def layout_10():
    # [BOS] image 1..6 (2x3) prompt 7..8 proprio 9: seq_len 10
    return TokenLayout(image_positions=torch.arange(1, 7), grid=(2, 3), prompt_positions=torch.arange(7, 9), seq_len=10)


def test_reuse_plan_by_hand():
    keep = torch.tensor([True, True, False, True, False, True])  # prunes positions 3 and 5
    p = fast.reuse_plan(layout_10(), keep, "exact_prefix")
    assert p.cached.tolist() == [0, 1, 2] and p.computed.tolist() == [4, 6, 7, 8, 9] and p.exact
    a = fast.reuse_plan(layout_10(), keep, "approx_image")
    assert a.cached.tolist() == [0, 1, 2, 4, 6] and a.computed.tolist() == [7, 8, 9] and not a.exact
    none = fast.reuse_plan(layout_10(), torch.ones(6, dtype=torch.bool), "exact_prefix")
    assert none.cached.tolist() == list(range(9)) and none.computed.tolist() == [9]
    assert none.reused_fraction == 0.9


def test_misuse_raises_one_clear_error(tiny_adapter):
    with pytest.raises(ConfigError, match="pass2"):
        DTPPolicy(tiny_adapter, DTPConfig(), pass2="fastest")
    with pytest.raises(ConfigError, match="reuses nothing"):
        fast.reuse_plan(layout_10(), torch.ones(6, dtype=torch.bool), "exact")

    class NoCacheAdapter:
        num_layers = 3

    with pytest.raises(UnsupportedModelError, match="exact"):
        DTPPolicy(NoCacheAdapter(), DTPConfig(), pass2="exact_prefix")
    assert DTPPolicy(NoCacheAdapter(), DTPConfig()).pass2 == "exact"


def test_reuse_is_a_declared_capability_not_a_class_check(tiny_adapter):
    """fast asks the adapter (supports_pass1_reuse), so a wrapper or another family can declare it."""

    class Wrapped:
        supports_pass1_reuse = True

    class Plain:
        pass

    assert fast.supports_reuse(tiny_adapter) and fast.supports_reuse(Wrapped()) and not fast.supports_reuse(Plain())
