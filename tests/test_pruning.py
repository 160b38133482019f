"""Exact pruning: hiding image tokens by the mask (original position ids) equals removing them."""

import torch

from dtp.models.base import Observation


def _masked_and_removed_logits(adapter, obs, keep):
    inputs = adapter.prepare(Observation.from_dict(obs))
    layout = inputs.layout
    embeds = adapter.embed(inputs)  # (1, S, D)
    s = layout.seq_len
    mask = torch.ones(1, s, dtype=torch.long)
    mask[0, layout.image_positions[~keep]] = 0
    pos = torch.arange(s).unsqueeze(0)
    lm = adapter.lm
    with torch.no_grad():
        masked = lm(inputs_embeds=embeds, attention_mask=mask, position_ids=pos).logits
        kept_idx = torch.nonzero(mask[0]).flatten()
        removed = lm(inputs_embeds=embeds[:, kept_idx], position_ids=pos[:, kept_idx]).logits
        shifted = lm(inputs_embeds=embeds[:, kept_idx]).logits  # positions renumbered: not removal
    return masked[:, kept_idx], removed, shifted


def test_mask_equals_removal_with_original_positions(tiny_adapter, tiny_obs):
    n = tiny_adapter.model.config.num_image_tokens
    keep = torch.ones(n, dtype=torch.bool)
    keep[torch.randperm(n, generator=torch.Generator().manual_seed(0))[: n // 3]] = False
    masked, removed, shifted = _masked_and_removed_logits(tiny_adapter, tiny_obs, keep)
    assert (masked - removed).abs().max() < 1e-5
    # the pitfall this guards against: renumbered positions give different numbers
    assert (shifted - removed).abs().max() > 1e-4


def test_pass2_generation_equals_generation_on_removed_tokens(tiny_adapter, tiny_obs):
    """The adapter's pruned generate gives the same action logits as a run with the tokens gone."""
    n = tiny_adapter.model.config.num_image_tokens
    keep = torch.ones(n, dtype=torch.bool)
    keep[5:20] = False
    inputs = tiny_adapter.prepare(Observation.from_dict(tiny_obs))
    gen = tiny_adapter.generate(inputs, keep=keep)
    layout = inputs.layout
    embeds = tiny_adapter.embed(inputs)
    kept_idx = torch.nonzero(tiny_adapter_mask(layout, keep)).flatten()
    pos = torch.arange(layout.seq_len)[kept_idx]
    seq, positions = embeds[:, kept_idx], pos
    ids = tiny_adapter.model.action_token_ids()
    with torch.no_grad():
        for t, b in enumerate(gen.action_bins.tolist()):
            logits = tiny_adapter.lm(inputs_embeds=seq, position_ids=positions.unsqueeze(0)).logits[0, -1, ids]
            assert (logits - gen.action_logits[t]).abs().max() < 1e-5
            assert int(logits.argmax()) == b
            tok = tiny_adapter.model.word_embeddings(ids[b].view(1, 1))
            seq = torch.cat([seq, tok], 1)
            positions = torch.cat([positions, torch.tensor([layout.seq_len + t])])


def tiny_adapter_mask(layout, keep):
    m = torch.ones(layout.seq_len, dtype=torch.bool)
    m[layout.image_positions[~keep]] = False
    return m
