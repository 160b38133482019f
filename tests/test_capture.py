"""Captured rows equal eager attention rows (prefill and cached decode), and the model is left as found."""

import pytest
import torch
from transformers import DynamicCache, Gemma2Config, Gemma2ForCausalLM, LlamaConfig, LlamaForCausalLM
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from dtp.capture import AttentionCapture, CaptureSpec

SEQ, IMG, QUERIES, DECODE = 40, list(range(3, 19)), [20, 21, 25, 39], 3


def tiny_llama():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    return LlamaForCausalLM(cfg).eval()


def tiny_gemma2():
    torch.manual_seed(0)
    cfg = Gemma2Config(vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=8,
                       attn_logit_softcapping=5.0, max_position_embeddings=128)
    return Gemma2ForCausalLM(cfg).eval()


def eager_rows(model, ids, queries):
    impl = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            out = model(ids, output_attentions=True)
    finally:
        model.set_attn_implementation(impl)
    return torch.stack([a[:, :, queries][..., IMG] for a in out.attentions])  # (L, B, H, q, N)


def captured_run(model, ids):
    spec = CaptureSpec(key_positions=torch.tensor(IMG), query_positions=torch.tensor(QUERIES))
    with AttentionCapture(model.config, spec) as cap, torch.no_grad():
        cache = DynamicCache(config=model.config)
        out = model(ids, cache=cache, use_cache=True)
        logits, tokens = [out.logits], []
        nxt = out.logits[:, -1:].argmax(-1)
        for _ in range(DECODE):
            tokens.append(nxt)
            out = model(nxt, cache=cache, use_cache=True)
            logits.append(out.logits)
            nxt = out.logits[:, -1:].argmax(-1)
        prefill = cap.rows_at(QUERIES)
        decode = cap.rows_at([SEQ + i for i in range(DECODE)])
        nbytes = cap.nbytes()
    return prefill, decode, torch.cat(tokens, 1), logits, nbytes


@pytest.mark.parametrize("make,impl", [(tiny_llama, "sdpa"), (tiny_llama, "eager"), (tiny_gemma2, "eager")])
def test_captured_rows_equal_eager(make, impl):
    model = make()
    model.set_attn_implementation(impl)
    ids = torch.randint(0, 100, (2, SEQ), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        plain = model(ids).logits
    prefill, decode, tokens, logits, nbytes = captured_run(model, ids)
    assert (prefill - eager_rows(model, ids, QUERIES)).abs().max() < 1e-5
    full = torch.cat([ids, tokens], 1)
    assert (decode - eager_rows(model, full, [SEQ + i for i in range(DECODE)])).abs().max() < 1e-5
    # capture does not change the model's output
    assert torch.allclose(logits[0], plain, atol=1e-6)
    # held memory: rows only, (layers x batch x heads x queries x N) floats
    L, H = model.config.num_hidden_layers, model.config.num_attention_heads
    assert nbytes == L * 2 * H * (len(QUERIES) + DECODE) * len(IMG) * 4


def test_gemma2_sliding_window_really_crops():
    """Sanity check of the test itself: with window 8, early image tokens get zero attention late on."""
    model = tiny_gemma2()
    ids = torch.randint(0, 100, (1, SEQ), generator=torch.Generator().manual_seed(2))
    _, decode, *_ = captured_run(model, ids)
    sliding_layer = 0  # Gemma2 alternates sliding (even) and full (odd) layers
    assert decode[sliding_layer].abs().sum() == 0
    assert decode[1].abs().sum() > 0


def test_capture_restores_model_on_exit_and_on_error():
    model = tiny_llama()
    model.set_attn_implementation("sdpa")
    before_attn, before_mask = set(ALL_ATTENTION_FUNCTIONS), set(ALL_MASK_ATTENTION_FUNCTIONS)
    spec = CaptureSpec(key_positions=torch.tensor(IMG), query_positions=torch.tensor(QUERIES))
    with pytest.raises(RuntimeError, match="boom"):
        with AttentionCapture(model.config, spec):
            assert model.config._attn_implementation.startswith("dtp_capture_")
            raise RuntimeError("boom")
    assert model.config._attn_implementation == "sdpa"
    assert set(ALL_ATTENTION_FUNCTIONS) == before_attn and set(ALL_MASK_ATTENTION_FUNCTIONS) == before_mask


def test_capture_records_nothing_outside_the_block():
    model = tiny_llama()
    ids = torch.randint(0, 100, (1, SEQ))
    spec = CaptureSpec(key_positions=torch.tensor(IMG), query_positions=torch.tensor(QUERIES))
    cap = AttentionCapture(model.config, spec)
    with cap, torch.no_grad():
        model(ids)
    n = cap.nbytes()
    with torch.no_grad():
        model(ids)
    assert cap.nbytes() == n


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_seek_records_a_block_rerun_over_a_cropped_cache(impl):
    """pi0's pattern: a block of queries runs over a cached prefix, the cache is cropped back, the block runs again.

    seek(prefix length) makes the block's rows keyed by their absolute positions; each run's rows equal
    eager rows of prefix + that block, and the second run's rows replace the first's.
    """
    model = tiny_llama()
    model.set_attn_implementation(impl)
    gen = torch.Generator().manual_seed(2)
    prefix, blocks = torch.randint(0, 100, (1, SEQ), generator=gen), torch.randint(0, 100, (2, 1, 4), generator=gen)
    block_q = [SEQ + i for i in range(4)]
    spec = CaptureSpec(key_positions=torch.tensor(IMG), query_positions=torch.tensor(block_q), record_decode=False)
    with torch.no_grad():
        cache = DynamicCache(config=model.config)
        model(prefix, cache=cache, use_cache=True)
        with AttentionCapture(model.config, spec) as cap:
            for block in blocks:
                cap.seek(SEQ)
                model(block, cache=cache, use_cache=True)
                rows = cap.rows_at(block_q)
                expected = eager_rows(model, torch.cat([prefix, block], 1), block_q)
                assert (rows - expected).abs().max() < 1e-5
                cache.crop(SEQ - cache.get_seq_length())
    assert not torch.allclose(eager_rows(model, torch.cat([prefix, blocks[0]], 1), block_q), rows)  # the rerun's rows won
