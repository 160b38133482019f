"""step_batch on the transformers families (issue 26): the generic path batches, the others loop visibly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dtp.config import DTPConfig
from dtp.models import wrap_model
from dtp.models.base import Observation
from dtp.policy import DTPPolicy

from tiny_models import INSTRUCTION

# the tiny tokenizers' words (tests/models/tiny_models.py); lengths differ, so the batch pads
INSTRUCTIONS = (INSTRUCTION, "push the blue cube", "open drawer", "press the green button in")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _obs(seed: int) -> Observation:
    img = np.random.RandomState(seed).randint(0, 256, (60, 80, 3), dtype=np.uint8)
    return Observation(image=img, instruction=INSTRUCTIONS[seed % len(INSTRUCTIONS)])


@pytest.mark.parametrize("name", ["llava", "gemma3", "idefics3"])
@pytest.mark.parametrize("tau", [0.05, 0.6])
def test_generic_batch_equals_step(request, name, tau):
    tiny = request.getfixturevalue(name)
    adapter = wrap_model(tiny.model, tiny.processor, **tiny.adapter_kwargs)
    assert adapter.supports_batch
    cfg = DTPConfig(tau=tau, k=0.25)
    obs = [_obs(s) for s in range(4)]
    pol = DTPPolicy(adapter, cfg)
    results = pol.step_batch(obs, [pol.new_episode(i) for i in range(4)])
    assert pol.batch_fallback is None
    if tau < 0.1:
        assert any(r.record.fired for r in results)
    for i, (o, res) in enumerate(zip(obs, results)):
        alone = DTPPolicy(adapter, cfg)
        alone.reset(i)
        rec, got = alone.step(o).record, res.record
        assert got.tokens == rec.tokens and got.tokens_pass1 == rec.tokens_pass1
        assert torch.equal(got.pruned, rec.pruned) and torch.equal(got.region, rec.region)
        torch.testing.assert_close(got.attention, rec.attention, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["llava", "idefics3"])
def test_generic_generate_batch_logits_equal_generate(request, name):
    tiny = request.getfixturevalue(name)
    adapter = wrap_model(tiny.model, tiny.processor, **tiny.adapter_kwargs)
    obs = [_obs(s) for s in range(3)]
    n = adapter.prepare(obs[0]).layout.num_image_tokens
    gen = torch.Generator().manual_seed(1)
    keeps = [torch.rand(n, generator=gen) > 0.4 for _ in obs[:-1]] + [None]
    for i, g in enumerate(adapter.generate_batch([adapter.prepare(o) for o in obs], keeps=keeps)):
        alone = adapter.generate(adapter.prepare(obs[i]), keep=keeps[i])
        assert g.action_bins.tolist() == alone.action_bins.tolist()
        torch.testing.assert_close(g.action_logits, alone.action_logits, atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", ["paligemma2", "qwen2_5_vl"])
def test_families_that_do_not_batch_loop_and_say_so(request, name):
    tiny = request.getfixturevalue(name)
    adapter = wrap_model(tiny.model, tiny.processor, **tiny.adapter_kwargs)
    assert not adapter.supports_batch
    pol = DTPPolicy(adapter, DTPConfig(tau=0.05))
    obs = [_obs(s) for s in range(2)]
    results = pol.step_batch(obs, [pol.new_episode(i) for i in range(2)])
    assert "does not batch" in pol.batch_fallback
    assert results[1].record.tokens == DTPPolicy(adapter, DTPConfig(tau=0.05)).step(obs[1]).record.tokens
