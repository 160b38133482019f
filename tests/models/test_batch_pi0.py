"""step_batch on pi0 (issue 26): one prefix pass and one denoising loop equal the sequential steps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_pi0 import pi0_observation, tiny_pi0

from dtp.config import DTPConfig
from dtp.models import wrap_model
from dtp.policy import DTPPolicy

INSTRUCTIONS = ("pick up the red block", "push the blue cube", "open drawer")


@pytest.fixture(scope="module")
def adapter():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared 2-core machine: two spinning threads make tiny passes far slower
    tiny = tiny_pi0()
    yield wrap_model(tiny.model, tiny.processor)
    torch.set_num_threads(before)


def _obs(seed: int):
    o = pi0_observation(seed)
    o.instruction = INSTRUCTIONS[seed % len(INSTRUCTIONS)]
    return o


@pytest.mark.parametrize("cfg", [DTPConfig(tau=0.5, k=0.25), DTPConfig(tau=0.9, k=0.25), DTPConfig(enabled=False),
                                 DTPConfig(tau=0.5, k=0.25, relevance="similarity")])
def test_pi0_batch_equals_sequential_steps(adapter, cfg):
    """pi0 draws each observation's noise in prepare: the batch and the sequential steps draw them in the same order."""
    obs = [_obs(s) for s in range(3)]
    pol = DTPPolicy(adapter, cfg)
    pol.reset(4)
    results = pol.step_batch(obs, [pol.new_episode(i) for i in range(3)])
    assert pol.batch_fallback is None
    alone = DTPPolicy(adapter, cfg)
    alone.reset(4)
    for o, res in zip(obs, results):
        rec = alone.step(o).record
        got = res.record
        assert got.n_pruned == rec.n_pruned and (rec.pruned is None or torch.equal(got.pruned, rec.pruned))
        np.testing.assert_allclose(got.action, rec.action, atol=1e-4, rtol=0)
        np.testing.assert_allclose(got.action_pass1, rec.action_pass1, atol=1e-4, rtol=0)
        if rec.attention is not None:
            torch.testing.assert_close(got.attention, rec.attention, atol=1e-5, rtol=1e-4)
    if cfg.enabled and cfg.tau < 0.6:
        assert any(r.record.fired for r in results)
