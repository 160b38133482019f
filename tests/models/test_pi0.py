"""pi0 (flow-matching action expert) on a tiny random PI0Config: capture, exact pruning, DTP off, DTP on, errors.

- captured prefix prompt->image rows and expert action->image rows (averaged over the chosen
  denoising steps) equal eager attention;
- hiding tokens by mask (original positions) equals removing them: prefix hidden states, prefix
  cache, and the denoised chunk;
- DTP off (and pass 2 with nothing pruned) equals the model's own `sample_actions` with the same noise;
- a DTPPolicy step returns a finite chunk and a StepRecord; bad inputs raise dtp errors.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_models import word_tokenizer
from tiny_pi0 import ACTION_DIM, CHUNK, STEPS, pi0_observation, pi0_processor, tiny_pi0
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from dtp.capture import CaptureSpec
from dtp.config import DTPConfig
from dtp.errors import ConfigError, InputError, LayoutError, UnsupportedModelError
from dtp.models import load, wrap_model
from dtp.models.common import capture_spec_for
from dtp.models.pi0 import PI0Adapter, denoise, resolve_steps
from dtp.policy import DTPPolicy, StepRecord

TOL = 1e-5


@pytest.fixture(scope="module")
def pi0():
    return tiny_pi0()


@pytest.fixture
def adapter(pi0):
    return wrap_model(pi0.model, pi0.processor)


def _holes(layout) -> torch.Tensor:
    keep = torch.ones(layout.num_image_tokens, dtype=torch.bool)
    keep[[3, 6, 9, 10]] = False  # holes in the middle of the image span, kept tokens after them
    return keep


def _sample_actions(model, mi) -> torch.Tensor:
    """The model's own flow-matching inference on the processor's inputs and the prepared noise."""
    return model.sample_actions(
        state=mi["state"], input_ids=mi["input_ids"], pixel_values=mi["pixel_values"], noise=mi["noise"].clone(),
        attention_mask=mi["attention_mask"], pixel_attention_mask=mi["pixel_attention_mask"],
    )[0]


@torch.inference_mode()
def _eager_rows(tiny, adapter, inputs, steps):
    """Rows from the eager copy with output_attentions: prompt rows (L, H, P, N), expert rows (L, H, C, N) averaged over steps."""
    ref = tiny.eager
    mi, layout = inputs.model_inputs, inputs.layout
    embeds = ref.model.embed_prefix(mi["input_ids"], mi["pixel_values"], mi["pixel_attention_mask"])
    out = ref.model.vlm(
        inputs_embeds=embeds, attention_mask=mi["attention_mask"], position_ids=mi["position_ids"],
        token_type_ids=torch.zeros_like(mi["input_ids"]), use_cache=True, output_attentions=True,
    )
    img = layout.image_positions
    prompt = torch.stack([a[0][:, layout.prompt_positions][:, :, img].float() for a in out.attentions])
    seen = []

    def pre(module, args, kwargs):
        return args, {**kwargs, "output_attentions": True}

    def post(module, args, kwargs, output):
        seen.append(output.attentions)

    h1 = ref.model.dit.register_forward_pre_hook(pre, with_kwargs=True)
    h2 = ref.model.dit.register_forward_hook(post, with_kwargs=True)
    try:
        denoise(ref, out.cache, mi["attention_mask"], adapter.suffix_positions(mi), mi["state"], mi["noise"], STEPS)
    finally:
        h1.remove()
        h2.remove()
    assert len(seen) == STEPS
    per_step = [torch.stack([a[0][:, 1:, img].float() for a in atts]) for atts in seen]  # queries after the state
    return prompt, torch.stack([per_step[k] for k in steps]).mean(0)


def test_registry_picks_pi0(pi0, adapter):
    assert type(adapter) is PI0Adapter
    assert adapter.num_layers == 3 and adapter.num_expert_layers == 3
    layout = adapter.prepare(pi0_observation()).layout
    assert layout.grid == (4, 4) and layout.image_positions.tolist() == list(range(16))
    assert layout.prompt_positions.tolist() == [17, 18, 19, 20, 21]  # after BOS, before the padding
    assert layout.seq_len == 48


def test_load_reads_a_local_checkpoint(pi0, tmp_path):
    """dtp.models.load on a saved pi0 directory (model + processor): same adapter, same chunk."""
    pi0.model.save_pretrained(tmp_path)
    pi0.processor.save_pretrained(tmp_path)
    loaded = load(tmp_path)
    assert type(loaded) is PI0Adapter and loaded.model.config.dit_config._attn_implementation == "sdpa"
    chunks = []
    for a in (loaded, wrap_model(pi0.model, pi0.processor)):
        a.reset(0)
        chunks.append(a.generate(a.prepare(pi0_observation())).actions)
    assert torch.equal(chunks[0], chunks[1])


@pytest.mark.parametrize("steps", ["all", "first", [0, 2]])
def test_captured_rows_equal_eager_attention(pi0, steps):
    adapter = wrap_model(pi0.model, pi0.processor, attention_steps=steps)
    assert adapter.expert_config._attn_implementation == "sdpa"
    inputs = adapter.prepare(pi0_observation())
    layout = inputs.layout
    spec = CaptureSpec(key_positions=layout.image_positions, query_positions=layout.prompt_positions, mean_heads=False)
    gen = adapter.generate(inputs, capture=spec, relevance_layers=(0, 1, 2))
    prompt, action = _eager_rows(pi0, adapter, inputs, resolve_steps(steps, STEPS))
    assert gen.trace.prompt_rows.shape == prompt.shape == (3, 4, 5, 16)
    assert gen.trace.action_rows.shape == action.shape == (3, 4, CHUNK, 16)
    assert float((gen.trace.prompt_rows - prompt).abs().max()) <= TOL
    assert float((gen.trace.action_rows - action).abs().max()) <= TOL
    # the attention machinery is restored afterwards
    assert adapter.text_config._attn_implementation == "sdpa" == adapter.expert_config._attn_implementation
    assert not any(k.startswith("dtp_capture") for k in ALL_ATTENTION_FUNCTIONS._global_mapping)
    assert not any(k.startswith("dtp_capture") for k in ALL_MASK_ATTENTION_FUNCTIONS._global_mapping)


def test_head_mean_capture_and_steps_matter(pi0):
    """DTP's own spec averages heads; the first step's rows differ from the mean over steps (the choice matters)."""
    obs = pi0_observation()
    rows = {}
    for steps in ("all", "first"):
        adapter = wrap_model(pi0.model, pi0.processor, attention_steps=steps)
        inputs = adapter.prepare(obs)
        gen = adapter.generate(inputs, capture=capture_spec_for(inputs.layout), relevance_layers=(1,))
        rows[steps] = gen.trace.action_rows
        assert gen.trace.action_rows.shape == (3, 1, CHUNK, 16)
    _, eager_all = _eager_rows(pi0, adapter, inputs, (0, 1, 2))
    assert float((rows["all"][:, 0] - eager_all.mean(1)).abs().max()) <= TOL
    assert float((rows["all"] - rows["first"]).abs().max()) > 1e-4


LONG = " ".join(["push the red block to the blue cube"] * 5)  # 40 words: the text fills 48 tokens, no padding


@pytest.mark.parametrize("instruction", ["pick up the red block", LONG])
def test_dtp_off_equals_sample_actions(pi0, adapter, instruction):
    obs = pi0_observation()
    obs.instruction = instruction
    adapter.reset(7)
    inputs = adapter.prepare(obs)
    reference = _sample_actions(pi0.model, inputs.model_inputs)
    plain = adapter.generate(inputs)
    captured = adapter.generate(inputs, capture=capture_spec_for(inputs.layout), relevance_layers=(1,))
    unpruned = adapter.generate(inputs, keep=torch.ones(16, dtype=torch.bool))
    padded = instruction != LONG
    assert bool((inputs.model_inputs["attention_mask"] == 0).any()) == padded
    assert torch.equal(plain.actions, reference)  # bit for bit
    assert torch.equal(captured.actions, reference)  # capturing does not change the output
    assert torch.equal(unpruned.actions, reference)  # pass 2 with nothing pruned is pass 1
    # through the policy: reset(7) reseeds the adapter, so the first step draws the same noise
    policy = DTPPolicy(adapter, DTPConfig(enabled=False))
    policy.reset(7)
    result = policy.step(obs)
    assert np.array_equal(result.action, adapter.decode(reference))
    assert not result.record.fired and np.isnan(result.record.entropy)


def test_noise_is_seeded_per_episode(adapter):
    obs = pi0_observation()
    adapter.reset(1)
    a = [adapter.prepare(obs).model_inputs["noise"] for _ in range(2)]
    adapter.reset(1)
    b = adapter.prepare(obs).model_inputs["noise"]
    adapter.reset(2)
    c = adapter.prepare(obs).model_inputs["noise"]
    assert torch.equal(a[0], b)
    assert not torch.equal(a[0], a[1]) and not torch.equal(a[0], c)


@torch.inference_mode()
def test_masking_equals_removal(adapter):
    inputs = adapter.prepare(pi0_observation())
    layout, mi = inputs.layout, inputs.model_inputs
    keep = _holes(layout)
    s = layout.seq_len
    kept = torch.ones(s, dtype=torch.bool)
    kept[layout.image_positions[~keep]] = False
    hole_mask = mi["attention_mask"].clone()
    hole_mask[0, ~kept] = 0

    by_mask = adapter.prefix(mi, hole_mask)
    model = adapter.model
    embeds = model.model.embed_prefix(mi["input_ids"], mi["pixel_values"], mi["pixel_attention_mask"])
    by_removal = model.model.vlm(
        inputs_embeds=embeds[:, kept], attention_mask=mi["attention_mask"][:, kept], position_ids=mi["position_ids"][:, kept],
        token_type_ids=torch.zeros(1, int(kept.sum()), dtype=torch.long), use_cache=True,
    )
    valid = mi["attention_mask"][0, kept].bool()  # compare the real tokens (padding rows are never read)
    hidden = (by_mask.last_hidden_state[0, kept][valid] - by_removal.last_hidden_state[0][valid]).abs().max()
    layers = list(zip(by_mask.cache.layers, by_removal.cache.layers))
    key_diff = max(float((lm.keys[:, :, kept] - lr.keys).abs().max()) for lm, lr in layers)
    value_diff = max(float((lm.values[:, :, kept] - lr.values).abs().max()) for lm, lr in layers)
    assert float(hidden) <= TOL and key_diff <= TOL and value_diff <= TOL

    # the whole pass 2: the adapter's masked chunk vs denoising over the shortened prefix, original positions
    chunk_mask = adapter.generate(inputs, keep=keep).actions
    chunk_removal = denoise(
        model, by_removal.cache, mi["attention_mask"][:, kept], adapter.suffix_positions(mi), mi["state"], mi["noise"], STEPS
    )[0]
    assert float((chunk_mask - chunk_removal).abs().max()) <= TOL
    assert float((chunk_mask - adapter.generate(inputs).actions).abs().max()) > 1e-4  # pruning does change the chunk


@torch.inference_mode()
def test_expert_positions_are_original(pi0, adapter):
    """pi0's own forward numbers the expert's queries by cumsum over the mask: holes would shift them."""
    inputs = adapter.prepare(pi0_observation())
    mi = inputs.model_inputs
    n_valid = int(mi["attention_mask"].sum())
    assert adapter.suffix_positions(mi).tolist() == [list(range(n_valid, n_valid + CHUNK + 1))]
    hole_mask = mi["attention_mask"].clone()
    hole_mask[0, inputs.layout.image_positions[~_holes(inputs.layout)]] = 0
    shifted = (torch.cumsum(torch.cat([hole_mask, torch.ones(1, CHUNK + 1, dtype=torch.long)], 1), 1) - 1)[:, -(CHUNK + 1):]
    assert not torch.equal(shifted, adapter.suffix_positions(mi))


@pytest.mark.parametrize("relevance", ["attention", "similarity"])
def test_dtp_step_returns_a_chunk_and_a_record(adapter, relevance):
    policy = DTPPolicy(adapter, DTPConfig(tau=0.5, k=0.25, relevance=relevance))
    policy.reset(0)
    result = policy.step(pi0_observation())
    rec = result.record
    assert isinstance(rec, StepRecord)
    assert result.action.shape == (CHUNK, ACTION_DIM) and np.isfinite(result.action).all()
    assert rec.relevance.shape == rec.attention.shape == rec.region.shape == (4, 4)
    assert rec.n_region == 4 and rec.fired and 0 < rec.irrelevant_fraction < 1
    assert rec.action_changed and rec.action_l2 > 0
    assert "pass2_s" in rec.timings and rec.capture_bytes > 0
    # pass 2 equals the adapter's own masked pass from the same prepared noise
    adapter.reset(0)
    inputs = adapter.prepare(pi0_observation())
    again = adapter.generate(inputs, keep=~rec.pruned.flatten())
    assert np.array_equal(adapter.decode(again.actions), result.action)


def test_decode_unnormalises_and_first_action(pi0):
    proc = pi0.processor
    chunk = torch.arange(CHUNK * 8, dtype=torch.float32).reshape(CHUNK, 8) / 10
    mean, std = np.array(proc.actions_mean, np.float32), np.array(proc.actions_std, np.float32)
    expected = chunk[:, :ACTION_DIM].numpy() * (std + 1e-8) + mean
    assert np.allclose(wrap_model(pi0.model, proc).decode(chunk), expected)
    first = wrap_model(pi0.model, proc, action_output="first").decode(chunk)
    assert first.shape == (ACTION_DIM,) and np.allclose(first, expected[0])
    raw = wrap_model(pi0.model, pi0_processor(stats=False), action_dim=6).decode(chunk)
    assert np.array_equal(raw, chunk[:, :6].numpy())


def test_bad_inputs_raise_clear_errors(pi0, adapter):
    obs = pi0_observation()
    with pytest.raises(InputError, match="proprio"):
        adapter.prepare(type(obs)(image=obs.image, instruction=obs.instruction))
    with pytest.raises(InputError, match="max_state_dim"):
        adapter.prepare(type(obs)(image=obs.image, instruction=obs.instruction, proprio=np.zeros(9, np.float32)))
    with pytest.raises(InputError, match="state statistics"):
        adapter.prepare(type(obs)(image=obs.image, instruction=obs.instruction, proprio=np.zeros(3, np.float32)))
    with pytest.raises(InputError, match="NaN"):
        adapter.prepare(type(obs)(image=obs.image, instruction=obs.instruction, proprio=np.full(4, np.nan, np.float32)))
    with pytest.raises(InputError, match="uint8"):
        adapter.prepare(type(obs)(image=obs.image.astype(np.float32), instruction=obs.instruction, proprio=obs.proprio))
    with pytest.raises(LayoutError, match="keep mask"):
        adapter.generate(adapter.prepare(obs), keep=torch.ones(5, dtype=torch.bool))
    with pytest.raises(InputError, match="chunk"):
        adapter.decode(torch.zeros(CHUNK, 3))
    with pytest.raises(ConfigError, match="state statistics"):
        wrap_model(pi0.model, pi0_processor(stats=False)).prepare(obs)
    with pytest.raises(ConfigError, match="attention_steps"):
        wrap_model(pi0.model, pi0.processor, attention_steps="middle")
    with pytest.raises(ConfigError, match="out of range"):
        wrap_model(pi0.model, pi0.processor, attention_steps=[STEPS])
    with pytest.raises(ConfigError, match="action_output"):
        wrap_model(pi0.model, pi0.processor, action_output="all")
    with pytest.raises(ConfigError, match="action_dim"):
        wrap_model(pi0.model, pi0.processor, action_dim=9)
    with pytest.raises(UnsupportedModelError, match="processor"):
        wrap_model(pi0.model, None)
    with pytest.raises(UnsupportedModelError, match="PI0ForConditionalGeneration"):
        PI0Adapter(torch.nn.Linear(2, 2), pi0.processor)


def test_pi0_processor_in_one_call_checks_the_model_it_serves():
    """dtp.models.pi0.pi0_processor: sizes from a config, and a model that cannot read its prompts is named."""
    import copy

    from dtp.models.pi0 import pi0_processor as build

    model = tiny_pi0().model
    proc = build(word_tokenizer(), config=model.config)
    assert proc.image_seq_length == 16 and proc.chunk_size == CHUNK and proc.max_state_dim == 8
    small = copy.deepcopy(model.config)
    small.vlm_config.text_config.vocab_size = 100
    with pytest.raises(ConfigError, match=f"vocab_size >= {len(proc.tokenizer)}"):
        build(word_tokenizer(), config=small)
    other = copy.deepcopy(model.config)
    other.vlm_config.image_token_id = 3
    with pytest.raises(ConfigError, match=f"image_token_id={proc.image_token_id}"):
        build(word_tokenizer(), config=other)
    with pytest.raises(ConfigError, match="more than max_state_dim"):
        build(word_tokenizer(), config=model.config, state_mean=[0.0] * 9)
