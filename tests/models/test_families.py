"""The contract every model family must keep, checked on tiny random models of each.

- captured rows equal eager attention (output_attentions=True) through prefill and cached decoding;
- pruning by mask equals removal (kept tokens keep their original positions);
- DTP off equals the model's own greedy `generate`, token for token;
- the full two-pass DTPPolicy step runs and prunes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_models import observation
from model_checks import eager_rows, mask_vs_removal, plain_generate
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from dtp.capture import CaptureSpec
from dtp.config import DTPConfig
from dtp.models import wrap_model
from dtp.models.common import capture_spec_for
from dtp.models.generic import GenericVLAAdapter
from dtp.models.openvla import OpenVLAAdapter
from dtp.models.paligemma import PaliGemmaAdapter
from dtp.models.qwen2_5_vl import Qwen2_5_VLAdapter
from dtp.policy import DTPPolicy

TOL = 1e-5

FAMILIES = {
    "paligemma2": PaliGemmaAdapter,
    "paligemma2_small_window": PaliGemmaAdapter,
    "qwen2_5_vl": Qwen2_5_VLAdapter,
    "llava": GenericVLAAdapter,
    "gemma3": GenericVLAAdapter,
    "idefics3": GenericVLAAdapter,
    "openvla": OpenVLAAdapter,
}
MAIN = ["paligemma2", "qwen2_5_vl", "llava", "openvla"]


def _adapter(request, name):
    tiny = request.getfixturevalue(name)
    return tiny, wrap_model(tiny.model, tiny.processor, **tiny.adapter_kwargs)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_registry_picks_the_family_adapter(request, name):
    tiny, adapter = _adapter(request, name)
    assert type(adapter) is FAMILIES[name]
    assert adapter.num_layers == 3


@pytest.mark.parametrize("name", list(FAMILIES))
def test_captured_rows_equal_eager_attention(request, name):
    tiny, adapter = _adapter(request, name)
    text_cfg = adapter.text_config
    # The adapter's model runs its production attention; the reference runs eager.
    expected_impl = "eager" if getattr(text_cfg, "attn_logit_softcapping", None) else "sdpa"
    assert text_cfg._attn_implementation == expected_impl
    inputs = adapter.prepare(observation())
    layout = inputs.layout
    layers = tuple(range(adapter.num_layers))
    policy_spec = capture_spec_for(layout)  # what DTPPolicy records (it may average heads as it goes)
    per_head = CaptureSpec(key_positions=layout.image_positions, query_positions=policy_spec.query_positions)
    for spec in (policy_spec, per_head):
        gen = adapter.generate(inputs, capture=spec, relevance_layers=layers)
        ids = adapter.actions.ids_of(gen.action_bins).tolist()
        ref = eager_rows(tiny.eager, adapter, inputs, ids)  # (L, H, S + T - 1, N)
        if gen.trace.action_rows.shape[1] == 1:
            ref = ref.mean(dim=1, keepdim=True)
        want_prompt = ref[:, :, layout.prompt_positions]
        want_action = ref[:, :, [layout.seq_len - 1 + t for t in range(len(ids))]]
        assert gen.trace.prompt_rows.shape == want_prompt.shape
        assert gen.trace.action_rows.shape == want_action.shape
        assert (gen.trace.prompt_rows - want_prompt).abs().max() < TOL  # prefill queries
        assert (gen.trace.action_rows[:, :, 0] - want_action[:, :, 0]).abs().max() < TOL  # last prefill query
        assert (gen.trace.action_rows[:, :, 1:] - want_action[:, :, 1:]).abs().max() < TOL  # cached decode queries
    assert gen.trace.action_rows.shape[1] == adapter.text_config.num_attention_heads
    # The rows are real attention (some layer puts mass on the image), and capture left nothing behind.
    assert float(gen.trace.action_rows.sum(-1).amax(0).min()) > 0
    assert text_cfg._attn_implementation == expected_impl
    assert not any(k.startswith("dtp_capture_") for k in ALL_ATTENTION_FUNCTIONS)
    assert not any(k.startswith("dtp_capture_") for k in ALL_MASK_ATTENTION_FUNCTIONS)


@pytest.mark.parametrize("name", [n for n in FAMILIES if n != "paligemma2_small_window"])
def test_pruning_by_mask_equals_removal(request, name):
    tiny, adapter = _adapter(request, name)
    inputs = adapter.prepare(observation())
    n = inputs.layout.num_image_tokens
    keep = torch.ones(n, dtype=torch.bool)
    keep[torch.randperm(n, generator=torch.Generator().manual_seed(1))[: n // 3]] = False
    diffs = mask_vs_removal(adapter, inputs, keep)
    assert diffs["prefill"] < TOL, diffs
    assert diffs["decode"] < TOL, diffs
    assert diffs["same_tokens"]


@pytest.mark.parametrize("name", [n for n in FAMILIES if n != "paligemma2_small_window"])
def test_dtp_off_equals_generate_constrained(request, name):
    tiny, adapter = _adapter(request, name)
    inputs = adapter.prepare(observation())
    step = DTPPolicy(adapter, DTPConfig(enabled=False)).step(observation())
    ours = adapter.actions.ids_of(torch.tensor(step.record.tokens)).tolist()
    assert ours == plain_generate(adapter, inputs, adapter.actions.n_tokens, constrain=True)


@pytest.mark.parametrize("name", MAIN)
def test_dtp_off_equals_generate_unconstrained(request, name):
    tiny = request.getfixturevalue(name)
    kwargs = {k: v for k, v in tiny.adapter_kwargs.items() if k != "action_token_ids"}
    adapter = wrap_model(tiny.model, tiny.processor, decoder=lambda ids: ids.astype(np.float32), **kwargs)
    assert adapter.actions.token_ids is None  # the whole vocabulary
    inputs = adapter.prepare(observation())
    gen = adapter.generate(inputs)
    assert gen.action_bins.tolist() == plain_generate(adapter, inputs, 7, constrain=False)
    assert adapter.decode(gen.action_bins).tolist() == gen.action_bins.float().tolist()


@pytest.mark.parametrize("name", MAIN)
@pytest.mark.parametrize("relevance", ["attention", "similarity"])
def test_two_pass_policy_step_prunes_and_returns_an_action(request, name, relevance):
    tiny, adapter = _adapter(request, name)
    policy = DTPPolicy(adapter, DTPConfig(tau=0.05, k=0.25, relevance=relevance))
    result = policy.step(observation())
    rec = result.record
    assert rec.n_pruned > 0
    assert result.action.shape == (7,) and np.isfinite(result.action).all()
    assert rec.relevance.shape == adapter.prepare(observation()).layout.grid
    assert "pass2_s" in rec.timings
    # pass 2 really differs from pass 1 when tokens are pruned: its logits moved
    again = adapter.generate(adapter.prepare(observation()), keep=~rec.pruned.flatten())
    assert again.action_bins.tolist() == rec.tokens
