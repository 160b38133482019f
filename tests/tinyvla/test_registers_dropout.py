"""Register tokens and image-token dropout: layout, exact pruning, and the shipped model unchanged."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dtp.models.base import Observation
from dtp.models.llama_vla import LlamaVLAAdapter
from dtp.tinyvla import TinyVLA, TinyVLAConfig, build_word_tokenizer
from dtp.tinyvla.train import image_keep_mask, teacher_forced_hidden

WORDS = ["push", "the", "red", "puck", "to", "goal"]
FIXTURE = Path(__file__).parent / "fixtures" / "shipped_reference.json"


def _tiny(registers: int) -> LlamaVLAAdapter:
    torch.manual_seed(0)
    cfg = TinyVLAConfig(image_size=48, patch_size=8, vision_width=32, hidden_size=64, num_layers=3, num_heads=4,
                        intermediate_size=128, num_words=32, num_registers=registers)
    return LlamaVLAAdapter(TinyVLA(cfg).eval(), build_word_tokenizer(WORDS))


def _obs():
    rng = np.random.default_rng(0)
    return Observation.from_dict({"image": rng.integers(0, 256, (48, 48, 3), dtype=np.uint8),
                                  "instruction": "push the red puck to the goal",
                                  "proprio": np.array([0.1, 0.5, 0.2, 1.0], dtype=np.float32)})


def test_shipped_model_gives_the_outputs_it_gave_before_registers_existed():
    """Reference: action bins and logits of the shipped checkpoint computed with the code before this change
    (fixtures/shipped_reference.json), full and with three image tokens pruned."""
    from dtp.models import load

    ref = json.loads(FIXTURE.read_text())
    adapter = load("tinyvla-plain")  # the checkpoint trained before registers existed
    assert adapter.model.config.num_registers == 0 and not hasattr(adapter.model, "registers")
    rng = np.random.default_rng(ref["seed"])
    obs = Observation.from_dict({"image": rng.integers(0, 256, (96, 96, 3), dtype=np.uint8),
                                 "instruction": "push the yellow puck to the green ball",
                                 "proprio": np.array([0.05, 0.6, 0.2, 0.4], dtype=np.float32)})
    inputs = adapter.prepare(obs)
    keep = torch.ones(64, dtype=torch.bool)
    keep[ref["pruned_tokens"]] = False
    for name, k in (("full", None), ("pruned", keep)):
        gen = adapter.generate(inputs, keep=k)
        assert gen.action_bins.tolist() == ref[name]["bins"]
        assert (gen.action_logits.float() - torch.tensor(ref[name]["logits"])).abs().max() < 1e-4


def test_registers_sit_between_image_and_prompt_and_are_not_image_tokens():
    adapter = _tiny(registers=3)
    n = adapter.model.config.num_image_tokens
    layout = adapter.prepare(_obs()).layout
    assert layout.image_positions.tolist() == list(range(1, 1 + n))
    assert layout.prompt_positions[0].item() == 1 + n + 3  # registers at 1 + n .. 1 + n + 2
    assert layout.seq_len == 1 + n + 3 + 7 + 1  # 7 words, then the proprio token
    emb = adapter.embed(adapter.prepare(_obs()))  # (1, S, D)
    assert torch.equal(emb[0, 1 + n : 1 + n + 3], adapter.model.registers[0].detach())
    # the default (no registers) has no parameter, so older checkpoints load strictly
    assert "registers" not in dict(_tiny(0).model.named_parameters())


def test_pruning_with_registers_equals_removal():
    adapter = _tiny(registers=2)
    inputs = adapter.prepare(_obs())
    layout = inputs.layout
    n = layout.num_image_tokens
    keep = torch.ones(n, dtype=torch.bool)
    keep[torch.randperm(n, generator=torch.Generator().manual_seed(1))[: n // 3]] = False
    gen = adapter.generate(inputs, keep=keep)  # the adapter's pass 2: mask + original positions
    embeds = adapter.embed(inputs)
    alive = torch.ones(layout.seq_len, dtype=torch.bool)
    alive[layout.image_positions[~keep]] = False
    kept = alive.nonzero().flatten()  # registers always among them
    assert set(range(1 + n, 1 + n + 2)) <= set(kept.tolist())
    seq, pos = embeds[:, kept], kept.clone()
    ids = adapter.model.action_token_ids()
    with torch.no_grad():
        for t, b in enumerate(gen.action_bins.tolist()):  # removal: the tokens are gone, positions kept
            logits = adapter.lm(inputs_embeds=seq, position_ids=pos.unsqueeze(0)).logits[0, -1, ids]
            assert (logits - gen.action_logits[t]).abs().max() <= 1e-5
            seq = torch.cat([seq, adapter.model.word_embeddings(ids[b].view(1, 1))], 1)
            pos = torch.cat([pos, torch.tensor([layout.seq_len + t])])


def test_image_keep_mask_is_seeded_and_bounded():
    a = image_keep_mask(64, 36, 0.5, torch.Generator().manual_seed(3))
    b = image_keep_mask(64, 36, 0.5, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == (64, 36) and a.dtype == torch.bool
    dropped = (~a).sum(1)
    assert dropped.max() <= round(0.5 * 36) and dropped.min() >= 0 and dropped.float().mean() > 3
    assert image_keep_mask(4, 36, 0.0, torch.Generator().manual_seed(0)).all()


@pytest.mark.parametrize("registers", [0, 2])
def test_image_token_dropout_in_training_equals_removal(registers):
    """The trainer's dropout hides tokens by the attention mask with original positions: the query
    states equal a forward pass over the sequence with those tokens removed (and differ from one
    with positions renumbered)."""
    model = _tiny(registers).model
    torch.manual_seed(0)
    b, words = 3, torch.tensor([[1, 5, 6, 7, 0], [1, 8, 4, 0, 0], [1, 3, 5, 6, 7]])
    lengths = torch.tensor([3, 2, 4])
    pixels, proprio = torch.rand(b, 3, 48, 48), torch.randn(b, 4)
    feed = torch.randint(32, 32 + 256, (b, 3))  # three action tokens fed back
    keep = image_keep_mask(b, model.config.num_image_tokens, 0.6, torch.Generator().manual_seed(2))
    assert (~keep).any()
    with torch.no_grad():
        h = teacher_forced_hidden(model, pixels, words, lengths, proprio, feed_ids=feed, n_queries=4, keep=keep)
        emb = model.sequence_embeddings(pixels, words, proprio, word_lengths=lengths, action_ids=feed)
        n = model.config.num_image_tokens
        for i in range(b):
            alive = torch.ones(emb.shape[1], dtype=torch.bool)
            alive[1 : 1 + n] = keep[i]
            kept = alive.nonzero().flatten()
            out = model.language_model.model(inputs_embeds=emb[i : i + 1, kept],
                                             position_ids=kept.view(1, -1)).last_hidden_state[0]
            renumbered = model.language_model.model(inputs_embeds=emb[i : i + 1, kept]).last_hidden_state[0]
            q = model.config.text_start + int(lengths[i]) + torch.arange(4)  # absolute query positions
            rows = torch.searchsorted(kept, q)  # where they sit after removal
            assert (out[rows] - h[i]).abs().max() <= 1e-5
            assert (renumbered[rows] - h[i]).abs().max() > 1e-4


def test_dtp_with_registers_prunes_only_image_tokens_and_fast_pass2_agrees():
    """A full DTP step on a model with registers: the pruned set lives on the image grid, and the
    fast pass 2 (pass 1's cache before the first pruned token) gives the exact pass 2's action."""
    from dtp import fast
    from dtp.config import DTPConfig
    from dtp.models.common import capture_spec_for
    from dtp.policy import DTPPolicy

    adapter = _tiny(registers=2)
    rng = np.random.default_rng(4)
    fired = 0
    for i in range(4):
        obs = {"image": rng.integers(0, 256, (48, 48, 3), dtype=np.uint8), "instruction": "push the red puck to the goal",
               "proprio": rng.normal(size=4).astype(np.float32)}
        plain = DTPPolicy(adapter, DTPConfig(tau=0.2)).step(obs).record
        quick = DTPPolicy(adapter, DTPConfig(tau=0.2), pass2="exact_prefix").step(obs).record
        assert plain.pruned.shape == (6, 6)  # the grid: registers cannot be pruned
        assert torch.equal(quick.pruned, plain.pruned)
        np.testing.assert_array_equal(quick.action, plain.action)
        fired += plain.fired
        inputs = adapter.prepare(Observation.from_dict(obs))
        gen1 = adapter.generate(inputs, capture=capture_spec_for(inputs.layout), relevance_layers=(1,))
        keep = torch.rand(36, generator=torch.Generator().manual_seed(i)) > 0.3
        exact = fast.second_pass(adapter, inputs, gen1, keep, "exact")
        gen1 = adapter.generate(inputs, capture=capture_spec_for(inputs.layout), relevance_layers=(1,))
        quick2 = fast.second_pass(adapter, inputs, gen1, keep, "exact_prefix")
        assert (quick2.action_logits - exact.action_logits).abs().max() < 1e-5
    assert fired > 0
