"""The training objectives of the three stages, and the teacher-forced forward they share.

Actions: cross-entropy of the action tokens over the action bins (soft, Gaussian targets with
bin_sigma). Grounding: cross-entropy of the one-word answer read at the proprio token, plus on
grounding batches the dense patch-word loss and the instruction-attention loss on Eq. 1's
relevance. Vision: the patch-word loss alone. Hidden image tokens are masked out of attention
with their original position ids, as DTP's pass 2 does.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from ..modeling import TinyVLA

__all__ = ["image_keep_mask", "teacher_forced_hidden", "action_logits", "grounding_logits", "patch_word_loss",
           "instruction_relevance", "mean_over_words", "supervised_words", "instruction_attention_loss",
           "action_loss", "training_loss", "grounding_loss"]


def image_keep_mask(batch: int, n_image: int, max_fraction: float, generator: torch.Generator) -> torch.Tensor:
    """Image-token dropout: (B, N) bool, False = hidden. Each sample hides round(u * N) random
    image tokens with u ~ U(0, max_fraction), so the model learns to act on a pruned image."""
    fractions = torch.rand(batch, generator=generator) * max_fraction  # (B,)
    n_drop = (fractions * n_image).round().long()  # (B,)
    ranks = torch.rand(batch, n_image, generator=generator).argsort(1).argsort(1)  # (B, N) random ranks
    return ranks >= n_drop.view(batch, 1)


def teacher_forced_hidden(
    model: TinyVLA,
    pixels: torch.Tensor,  # (B, 3, H, W)
    ids: torch.Tensor,  # (B, 1 + P_max)
    word_lengths: torch.Tensor,  # (B,)
    proprio: torch.Tensor,  # (B, P)
    *,
    feed_ids: torch.Tensor | None = None,  # (B, T - 1) vocabulary ids fed after the proprio token
    n_queries: int = 1,
    keep: torch.Tensor | None = None,  # (B, N) bool, False = image token hidden
    image_embeddings: torch.Tensor | None = None,  # (B, N, D): model.image_embeddings(pixels), when already computed
) -> torch.Tensor:
    """Last hidden states of the T = n_queries queries that emit answer/action tokens, (B, T, D).

    The query for token t sits at text_start + P_b + t (the proprio token for t = 0), exactly
    where the adapter's prefill and cached decoding put it. Hidden image tokens (keep False) are
    masked out of attention while every token keeps its original position id: the mechanism of
    DTP's pass 2, equal to removing them.
    """
    cfg = model.config
    emb = model.sequence_embeddings(  # (B, S, D), rows right-padded after their last real token
        pixels, ids, proprio, word_lengths=word_lengths, action_ids=feed_ids, image_embeddings=image_embeddings
    )
    b, s, _ = emb.shape
    mask = None
    if keep is not None:
        mask = torch.ones(b, s, dtype=torch.long)
        mask[:, 1 : 1 + cfg.num_image_tokens] = keep.long()
    # causal attention, positions 0..S-1: a row's padding sits after all its real tokens
    lm = model.language_model
    hidden = lm.model(inputs_embeds=emb, attention_mask=mask, position_ids=torch.arange(s).expand(b, s)).last_hidden_state
    queries = (cfg.text_start + word_lengths).view(b, 1) + torch.arange(n_queries).view(1, n_queries)  # (B, T)
    return hidden.gather(1, queries.unsqueeze(-1).expand(b, n_queries, hidden.shape[-1]))  # (B, T, D)


def action_logits(model: TinyVLA, batch, keep: torch.Tensor | None = None) -> torch.Tensor:
    """Teacher-forced logits over the action bins, (B, T, bins).

    The model reads [BOS][image x N][registers][words][proprio] and the first T - 1 target
    action tokens (see teacher_forced_hidden); keep (B, N) hides image tokens (dropout).
    """
    cfg = model.config
    t = batch.action_bins.shape[1]
    action_ids = batch.action_bins[:, : t - 1] + cfg.num_words  # (B, T-1) vocabulary ids fed back
    h = teacher_forced_hidden(model, batch.pixels, batch.ids, batch.word_lengths, batch.proprio,
                              feed_ids=action_ids, n_queries=t, keep=keep)  # (B, T, D)
    logits = model.language_model.lm_head(h)  # (B, T, V)
    return logits[..., cfg.num_words : cfg.vocab_size].float()  # (B, T, bins): the adapter decodes from these


def grounding_logits(model: TinyVLA, batch, keep: torch.Tensor | None = None,
                     image_embeddings: torch.Tensor | None = None) -> torch.Tensor:
    """Logits over the word vocabulary of the one-word answer, read at the proprio token, (B, num_words)."""
    h = teacher_forced_hidden(model, batch.pixels, batch.ids, batch.word_lengths, batch.proprio, keep=keep,
                              image_embeddings=image_embeddings)
    return model.language_model.lm_head(h[:, 0])[:, : model.config.num_words].float()


def patch_word_loss(model: TinyVLA, head: torch.nn.Linear, pixels: torch.Tensor, targets: torch.Tensor,
                    image_embeddings: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary cross-entropy of `head` over each projected image token against which words describe
    its patch: pixels (B, 3, H, W), targets (B, W, N) bool. Returns (loss, logits (B, W, N))."""
    img = model.image_embeddings(pixels) if image_embeddings is None else image_embeddings  # (B, N, D)
    logits = head(img).transpose(1, 2).float()  # (B, W, N)
    return F.binary_cross_entropy_with_logits(logits, targets.float()), logits


@contextlib.contextmanager
def _eager_attention(lm):
    """Inside the block the language model computes attention eagerly (so it can return the
    probabilities, with gradients); its own implementation is restored on exit."""
    old = lm.config._attn_implementation
    lm.config._attn_implementation = "eager"
    try:
        yield
    finally:
        lm.config._attn_implementation = old


def instruction_relevance(model: TinyVLA, pixels: torch.Tensor, ids: torch.Tensor, word_lengths: torch.Tensor,
                          proprio: torch.Tensor, layers: tuple[int, ...],
                          image_embeddings: torch.Tensor | None = None, per_word: bool = False) -> torch.Tensor:
    """Eq. 1's relevance before smoothing, per layer and differentiable: the mean over heads and the
    instruction's words of their attention to each image token, in the policy's prompt layout
    [BOS][image][registers][words][proprio]. pixels (B, 3, H, W); ids (B, 1 + P) BOS and right-
    padded words of word_lengths (B,); proprio (B, P_dims). Returns (len(layers), B, N), or with
    per_word each word's own row, (len(layers), B, P, N) (padding words' rows are zero)."""
    cfg = model.config
    emb = model.sequence_embeddings(pixels, ids, proprio, word_lengths=word_lengths,
                                    image_embeddings=image_embeddings)  # (B, S, D)
    b, s, _ = emb.shape
    lm = model.language_model
    with _eager_attention(lm):
        att = lm.model(inputs_embeds=emb, position_ids=torch.arange(s).expand(b, s), output_attentions=True).attentions
    p = ids.shape[1] - 1
    words = (torch.arange(p).view(1, p) < word_lengths.view(b, 1)).float()  # (B, P): real words, not padding
    image = slice(1, 1 + cfg.num_image_tokens)
    rows = torch.stack([att[l][:, :, cfg.text_start : cfg.text_start + p, image] for l in layers]).float()  # (L, B, H, P, N)
    per = rows.mean(2) * words.view(1, b, p, 1)  # (L, B, P, N)
    return per if per_word else mean_over_words(per, word_lengths)


def mean_over_words(per_word: torch.Tensor, word_lengths: torch.Tensor) -> torch.Tensor:
    """Eq. 1's mean over the instruction's words: (L, B, P, N) rows, zero for padding -> (L, B, N)."""
    return per_word.sum(2) / word_lengths.clamp(min=1).view(1, -1, 1).float()


def supervised_words(word_lengths: torch.Tensor, swap_word: torch.Tensor, p: int) -> torch.Tensor:
    """(B, P) bool: the words the instruction-attention loss trains, from the swapped colour word on
    (every word where the frame has no twin). Under causal attention a word before the colour word
    cannot know which lookalike is meant, so it is not asked to."""
    j = torch.arange(p).view(1, p)
    return (j >= swap_word.view(-1, 1)) & (j < word_lengths.view(-1, 1))


def instruction_attention_loss(relevance: torch.Tensor, regions: torch.Tensor, words: torch.Tensor | None = None
                               ) -> torch.Tensor:
    """Cross-entropy from the uniform distribution over the named patches to the relevance
    normalised over the image, averaged over layers and the frames whose region is not empty.
    relevance (L, B, N) >= 0, or per word (L, B, P, N) with words (B, P) bool choosing the rows
    trained (averaged over those); regions (B, N) bool."""
    if relevance.dim() == 3:  # one row per frame: a single "word" that is always trained
        relevance = relevance.unsqueeze(2)
        words = torch.ones(relevance.shape[1], 1, dtype=torch.bool)
    p = relevance / relevance.sum(-1, keepdim=True).clamp_min(1e-12)  # (L, B, P, N)
    target = regions.float() / regions.sum(-1, keepdim=True).clamp(min=1)  # (B, N)
    ce = -(target.unsqueeze(1) * torch.log(p + 1e-8)).sum(-1)  # (L, B, P)
    sel = words & regions.any(-1).view(-1, 1)  # (B, P): chosen words of frames whose region is not empty
    return ce[:, sel].mean() if bool(sel.any()) else relevance.sum() * 0.0



def action_loss(logits: torch.Tensor, targets: torch.Tensor, bin_sigma: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy of logits (..., bins) against target bins (...).

    bin_sigma > 0 replaces the one-hot target by a Gaussian over the bins around it (std in
    bins), so a near miss costs less than a far one: the bins are ordered, the tokens are not.
    """
    flat, target = logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)
    if bin_sigma <= 0:
        return F.cross_entropy(flat, target)
    bins = torch.arange(flat.shape[-1], dtype=torch.float32)
    soft = torch.softmax(-0.5 * ((bins.view(1, -1) - target.view(-1, 1).float()) / bin_sigma) ** 2, dim=-1)
    return F.cross_entropy(flat, soft)


def training_loss(model: TinyVLA, batch, bin_sigma: float = 0.0, keep: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss of the T action tokens over the action bins (see action_loss); returns (loss, predicted bins (B, T))."""
    logits = action_logits(model, batch, keep)  # (B, T, bins)
    return action_loss(logits, batch.action_bins, bin_sigma), logits.argmax(-1)


def grounding_loss(model: TinyVLA, batch, keep: torch.Tensor | None = None,
                   image_embeddings: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of the one-word answers over the word vocabulary; returns (loss, predicted word ids (B,))."""
    logits = grounding_logits(model, batch, keep, image_embeddings)  # (B, num_words)
    return F.cross_entropy(logits, batch.answers), logits.argmax(-1)
