"""Train TinyVLA on scripted demonstrations: behaviour cloning with action tokens.

Each step of each demo is one sample. The model reads [BOS][image x N][registers][words][proprio]
and, with teacher forcing, the first three action tokens; the loss is cross-entropy of
the four action tokens over the 256 action bins (the vocabulary the adapter decodes
from), nothing else. The sequence is built by `TinyVLA.sequence_embeddings`, the same
function the inference adapter uses.

A VLM stage comes first when asked (docs/training.md): `stage="grounding"` trains on
grounding questions only (one answer word read at the proprio token), and an actions run
with `init_from` and `grounding_share` continues from it with that share of grounding
batches mixed in. `stage="vision"` comes before both when asked: it trains the image encoder
and projector alone on the patch-word labels (below), as a VLA inherits a pretrained vision
encoder; the language model stays as initialised. `image_dropout` hides random image tokens
of action samples by the attention mask with original position ids, as DTP's pass 2 does.
`patch_word_weight` adds, on grounding batches, a dense loss: a linear head on each projected
image token predicts which object words (colour, noun, shape) describe what the patch holds,
from the frames' `patch_words` labels. The head is a training aid, kept in the run's
checkpoints and not in the model. `instruction_attention_weight` adds, on grounding batches,
a loss on Eq. 1's relevance itself: the attention of the frame's task instruction (or, half
the time, its colour-swapped twin) to the image, in `instruction_attention_layers`, is pulled
toward the patches of the parts it names, so that G follows the words (docs/training.md).

    from dtp.tinyvla.train import TrainConfig, train
    final_dir = train(TrainConfig(data_dir="data/demos", out_dir="runs/train_tinyvla"))

or ``python -m dtp.tinyvla.train --data-dir data/demos --out-dir runs/train_tinyvla``.

Determinism: the batch indices and augmentation of step k come from a generator seeded
with (seed, k), the model from `seed`, and everything else is a function of the step, so
the same command gives the same numbers and `resume=True` continues exactly where the
last checkpoint left off (weights and AdamW state are saved as safetensors, never pickled).

Output directory:
    train_config.json            the TrainConfig of the run
    train_log.jsonl              {"kind": "train", step, loss, acc, lr, grad_norm, seconds} every
                                 log_every steps; {"kind": "val", step, loss, acc, acc_<task>...}
    checkpoints/step_<k>/        config.json, model.safetensors, tokenizer.json,
                                 optimizer.safetensors, trainer_state.json (the last keep_checkpoints),
                                 patch_word_head.safetensors (vision stage or patch_word_weight > 0)
    final/                       config.json, model.safetensors, tokenizer.json, training.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import logging
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ..actions import ActionBinner
from ..errors import CheckpointError, ConfigError
from .data import (DataError, DemoSet, augment, build_tokenizer, demo_variant, load_episodes, make_demo_set,
                   split_episodes, to_pixels)
from .modeling import VARIANT_KEY, TinyVLA, TinyVLAConfig
from .tokenizer import load_tokenizer, save_tokenizer

__all__ = ["TrainConfig", "train", "evaluate", "evaluate_grounding", "action_logits", "grounding_logits", "action_loss",
           "training_loss", "grounding_loss", "patch_word_loss", "instruction_relevance", "instruction_attention_loss",
           "supervised_words",
           "evaluate_instruction_attention", "teacher_forced_hidden", "image_keep_mask", "lr_at", "main"]

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
FINAL = "final"
LOG_NAME = "train_log.jsonl"
STATE_NAME = "trainer_state.json"
OPTIM_NAME = "optimizer.safetensors"
SUMMARY_NAME = "training.json"
HEAD_NAME = "patch_word_head.safetensors"
STAGES = ("actions", "grounding", "vision")
SWAPPED_SHARE = 0.5  # share of instruction-attention samples that read the colour-swapped twin
_MODEL_DEFAULTS = TinyVLAConfig()  # the model sizes are TinyVLAConfig's; TrainConfig only lets a run change them


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on. Validated at construction (ConfigError)."""

    data_dir: str = "data/demos"
    out_dir: str = "runs/train_tinyvla"
    steps: int = 2800
    batch_size: int = 64
    lr: float = 1e-3
    min_lr_ratio: float = 0.05  # cosine decays to lr * min_lr_ratio
    weight_decay: float = 0.05
    warmup: int = 100
    grad_clip: float = 1.0
    bin_sigma: float = 2.0  # >0: soft targets, a Gaussian over neighbouring bins (std in bins); 0: one-hot CE
    seed: int = 0
    # model sizes (TinyVLAConfig): 1.66M parameters, 6.7 MB; measured 1.1-1.9 s/step at batch 64 in bf16
    # on one thread of the shared 2-core machine (hidden 192: ~+40%, 256: ~+2x); the defaults are the
    # shipped model's recipe (it ran with --threads 1, 2800 steps in 58 min)
    image_size: int = _MODEL_DEFAULTS.image_size
    patch_size: int = _MODEL_DEFAULTS.patch_size
    vision_width: int = _MODEL_DEFAULTS.vision_width
    hidden_size: int = _MODEL_DEFAULTS.hidden_size
    num_layers: int = _MODEL_DEFAULTS.num_layers
    num_heads: int = _MODEL_DEFAULTS.num_heads
    intermediate_size: int = _MODEL_DEFAULTS.intermediate_size
    # data
    tasks: tuple[str, ...] | None = None  # None: every task folder in data_dir
    only_success: bool = True
    val_fraction: float = 0.1
    max_shift: int = 3  # pixels, random shift augmentation
    color_jitter: float = 0.1  # brightness/contrast factor range +-
    # bookkeeping
    log_every: int = 10
    eval_every: int = 400
    eval_samples: int = 1536  # val steps per periodic evaluation (a fixed subset); 0 = all
    save_every: int = 400
    keep_checkpoints: int = 2
    resume: bool = False
    threads: int = 1  # torch threads; 2 on a shared 2-core machine stalls (OpenMP spin-waits), see docs/performance.md
    precision: str = "bf16"  # autocast dtype of the training forward ("bf16" | "fp32"); eval runs fp32
    progress: bool = True
    # VLM stage (docs/training.md): "grounding" pretrains on grounding_dir/train only (data_dir unused);
    # "actions" trains on the demos, with grounding_share of the steps on a grounding batch instead
    stage: str = "actions"
    grounding_dir: str | None = None  # written by `python -m dtp.tinyvla.grounding` (train/ and val/ inside)
    grounding_share: float = 0.0
    init_from: str | None = None  # start from this checkpoint (its architecture and tokenizer; sizes above ignored)
    num_registers: int = 0  # register tokens after the image span (TinyVLAConfig.num_registers)
    image_dropout: float = 0.0  # each action sample hides up to this share of its image tokens (mask, original positions)
    patch_word_weight: float = 0.0  # >0: dense patch-word loss on grounding batches (frames need patch_words)
    # >0: Eq. 1's relevance of the frames' instructions trained onto the parts they name (grounding batches)
    instruction_attention_weight: float = 0.0
    instruction_attention_layers: tuple[int, ...] = (2, 3)  # language-model layers whose attention it trains

    def __post_init__(self) -> None:
        def bad(msg: str) -> None:
            raise ConfigError(f"TrainConfig: {msg}")

        for name in ("steps", "batch_size", "image_size", "patch_size", "vision_width", "hidden_size",
                     "num_layers", "num_heads", "intermediate_size", "log_every", "eval_every", "save_every",
                     "keep_checkpoints", "threads"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                bad(f"{name} must be a positive integer, got {v!r}")
        for name in ("warmup", "max_shift", "eval_samples", "seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                bad(f"{name} must be a non-negative integer, got {v!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            bad(f"lr must be a positive number, got {self.lr!r}")
        if not 0 <= self.min_lr_ratio <= 1:
            bad(f"min_lr_ratio must lie in [0, 1], got {self.min_lr_ratio!r}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            bad(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if not (math.isfinite(self.bin_sigma) and self.bin_sigma >= 0):
            bad(f"bin_sigma must be >= 0, got {self.bin_sigma!r}")
        if not (math.isfinite(self.grad_clip) and self.grad_clip > 0):
            bad(f"grad_clip must be > 0, got {self.grad_clip!r}")
        if not 0 <= self.val_fraction < 1:
            bad(f"val_fraction must lie in [0, 1), got {self.val_fraction!r}")
        if not 0 <= self.color_jitter < 1:
            bad(f"color_jitter must lie in [0, 1), got {self.color_jitter!r}")
        if self.warmup >= self.steps and self.steps > 1:
            bad(f"warmup ({self.warmup}) must be shorter than steps ({self.steps})")
        if self.patch_size % 2:
            bad(f"patch_size must be even (the encoder's stem halves the resolution), got {self.patch_size}")
        if self.image_size % self.patch_size:
            bad(f"image_size ({self.image_size}) must be a multiple of patch_size ({self.patch_size})")
        if self.hidden_size % self.num_heads or (self.hidden_size // self.num_heads) % 2:
            bad(f"hidden_size ({self.hidden_size}) must split into num_heads ({self.num_heads}) even-sized heads")
        if self.max_shift * 2 >= self.image_size:
            bad(f"max_shift ({self.max_shift}) is too large for {self.image_size} px images")
        if self.save_every % self.log_every:
            bad(f"save_every ({self.save_every}) must be a multiple of log_every ({self.log_every}) "
                "so that a resumed run logs the same windows")
        if self.precision not in ("bf16", "fp32"):
            bad(f"precision must be 'bf16' or 'fp32', got {self.precision!r}")
        if self.tasks is not None and (isinstance(self.tasks, str) or not self.tasks):
            bad(f"tasks must be a non-empty tuple of task names or None, got {self.tasks!r}")
        if not str(self.data_dir) or not str(self.out_dir):
            bad("data_dir and out_dir must be non-empty paths")
        if self.stage not in STAGES:
            bad(f"stage must be one of {STAGES}, got {self.stage!r}")
        if not 0 <= self.grounding_share < 1:
            bad(f"grounding_share must lie in [0, 1), got {self.grounding_share!r}")
        if (self.stage != "actions" or self.grounding_share > 0) and not self.grounding_dir:
            bad(f"the {self.stage} stage and grounding_share > 0 need grounding_dir")
        if self.stage != "actions" and self.grounding_share:
            bad(f"grounding_share mixes grounding into the actions stage; the {self.stage} stage takes no share")
        if not 0 <= self.image_dropout < 1:
            bad(f"image_dropout must lie in [0, 1), got {self.image_dropout!r}")
        if isinstance(self.num_registers, bool) or not isinstance(self.num_registers, int) or self.num_registers < 0:
            bad(f"num_registers must be a non-negative integer, got {self.num_registers!r}")
        if not (isinstance(self.patch_word_weight, (int, float)) and math.isfinite(self.patch_word_weight)
                and self.patch_word_weight >= 0):
            bad(f"patch_word_weight must be >= 0, got {self.patch_word_weight!r}")
        if self.patch_word_weight > 0 and self.stage == "actions" and not self.grounding_share:
            bad("patch_word_weight applies to grounding batches: use stage='grounding' or grounding_share > 0")
        w = self.instruction_attention_weight
        if not (isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) and w >= 0):
            bad(f"instruction_attention_weight must be >= 0, got {w!r}")
        if w > 0 and (self.stage == "vision" or (self.stage == "actions" and not self.grounding_share)):
            bad("instruction_attention_weight applies to grounding batches: use stage='grounding' or grounding_share > 0")
        layers = self.instruction_attention_layers
        if (isinstance(layers, str) or not layers
                or any(isinstance(l, bool) or not isinstance(l, int) or l < 0 for l in layers)):
            bad(f"instruction_attention_layers must be a non-empty tuple of layer indices >= 0, got {layers!r}")

    def model_config(self, num_words: int) -> TinyVLAConfig:
        return TinyVLAConfig(
            image_size=self.image_size,
            patch_size=self.patch_size,
            vision_width=self.vision_width,
            hidden_size=self.hidden_size,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            intermediate_size=self.intermediate_size,
            num_words=num_words,
            num_registers=self.num_registers,
        )

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["tasks"] = list(self.tasks) if self.tasks is not None else None
        d["instruction_attention_layers"] = list(self.instruction_attention_layers)
        return d


# -- the objective ----------------------------------------------------------------------
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


@torch.no_grad()
def evaluate_patch_words(model: TinyVLA, head: torch.nn.Linear, data, labels: torch.Tensor,
                         batch_size: int = 256) -> dict[str, float]:
    """Patch-word loss and F1 (logit > 0) over every frame of `data` (a GroundingSet), against
    labels (F, W, N) bool over the head's W words."""
    was_training = model.training
    model.eval()
    total, tp, fp, fn = 0.0, 0, 0, 0
    for start in range(0, data.n_frames, batch_size):
        stop = min(start + batch_size, data.n_frames)
        target = labels[start:stop]
        loss, logits = patch_word_loss(model, head, to_pixels(data.images[start:stop]), target)
        total += float(loss) * (stop - start)
        guess = logits > 0
        tp += int((guess & target).sum())
        fp += int((guess & ~target).sum())
        fn += int((~guess & target).sum())
    model.train(was_training)
    return {"pw_loss": total / max(data.n_frames, 1), "pw_f1": 2 * tp / max(2 * tp + fp + fn, 1)}


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
    return per if per_word else _mean_over_words(per, word_lengths)


def _mean_over_words(per_word: torch.Tensor, word_lengths: torch.Tensor) -> torch.Tensor:
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


@torch.no_grad()
def evaluate_instruction_attention(model: TinyVLA, data, layers: tuple[int, ...], batch_size: int = 256
                                   ) -> dict[str, float]:
    """On every frame of `data` (a GroundingSet with instruction targets), in float32, with Eq. 1's
    relevance (the mean over words, averaged over `layers`) and G at DTPConfig's default k and sigma:

    ia_loss: the training loss on the instructions; ia_cover / ia_cover_swapped: share of the named
    patches inside G for the instruction / its colour-swapped twin; on frames with a twin, over the
    patches only the named part or only the lookalike holds: ia_mass_named / ia_mass_lookalike,
    the share of the twin's relevance on each, and ia_moved, the share of frames where the twin's
    relevance holds more of the lookalike than of the named part and more than the instruction's
    did (grounding_shift's rule, on relevance mass instead of G).
    """
    from ..config import DTPConfig
    from ..core import important_region

    dtp = DTPConfig()
    was_training = model.training
    model.eval()
    grid = model.config.grid
    sums: dict[str, list] = {name: [0.0, 0] for name in (
        "ia_loss", "ia_cover", "ia_cover_swapped", "ia_mass_named", "ia_mass_lookalike", "ia_moved")}

    def add(name: str, values: torch.Tensor) -> None:
        sums[name][0] += float(values.float().sum())
        sums[name][1] += int(values.numel())

    for start in range(0, data.n_frames, batch_size):
        frames = torch.arange(start, min(start + batch_size, data.n_frames))
        pixels = to_pixels(data.images[frames])
        r, regions = {}, {}
        for variant in (0, 1):
            ids, lengths, reg, swap_word = data.instructions(frames, torch.full((len(frames),), bool(variant)))
            rows = instruction_relevance(model, pixels, ids, lengths, data.proprio[frames], layers,
                                         per_word=True)  # (L, B, P, N)
            if variant == 0 and bool(reg.any(-1).any()):
                keep = reg.any(-1)
                words = supervised_words(lengths, swap_word, rows.shape[2])
                add("ia_loss", instruction_attention_loss(rows[:, keep], reg[keep], words[keep]).expand(int(keep.sum())))
            r[variant] = _mean_over_words(rows, lengths).mean(0)  # (B, N): Eq. 1, averaged over layers
            regions[variant] = reg
        twin = data.instruction_lengths[frames, 1] > 0  # (B,)
        for variant, name in ((0, "ia_cover"), (1, "ia_cover_swapped")):
            sel = regions[variant].any(-1) & (twin if variant else torch.ones_like(twin))
            if not bool(sel.any()):
                continue
            g = important_region(r[variant][sel].reshape(-1, *grid), dtp.k, dtp.sigma).reshape(int(sel.sum()), -1)
            named = regions[variant][sel]
            add(name, (g & named).sum(-1).float() / named.sum(-1).float())
        named_only, look_only = regions[0] & ~regions[1], regions[1] & ~regions[0]  # (B, N)
        sel = twin & named_only.any(-1) & look_only.any(-1)
        if bool(sel.any()):
            def mass(rel: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
                return (rel * mask).sum(-1) / rel.sum(-1).clamp_min(1e-12)

            named_mass, look_mass = mass(r[1][sel], named_only[sel]), mass(r[1][sel], look_only[sel])
            add("ia_mass_named", named_mass)
            add("ia_mass_lookalike", look_mass)
            add("ia_moved", (look_mass > named_mass) & (look_mass > mass(r[0][sel], look_only[sel])))
    model.train(was_training)
    return {k: total / n for k, (total, n) in sums.items() if n}


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


@torch.no_grad()
def evaluate_grounding(model: TinyVLA, data, tokenizer, batch_size: int = 256) -> dict[str, float]:
    """Answer accuracy on every question of `data` (a GroundingSet), overall and per kind, in float32.

    g_point_near: pointing answers within one cell (row and column) of the true cell.
    """
    from .grounding_data import KINDS, cell_of_token

    was_training = model.training
    model.eval()
    preds = []
    total_loss = 0.0
    for start in range(0, len(data), batch_size):
        batch = data.batch(torch.arange(start, min(start + batch_size, len(data))))
        loss, pred = grounding_loss(model, batch)
        total_loss += float(loss) * len(pred)
        preds.append(pred)
    model.train(was_training)
    pred = torch.cat(preds)
    hit = (pred == data.answers).float()
    out = {"g_loss": total_loss / max(len(data), 1), "g_acc": float(hit.mean())}
    for i, kind in enumerate(KINDS):
        sel = data.kind_ids == i
        if sel.any():
            out[f"g_acc_{kind}"] = float(hit[sel].mean())
    point = (data.kind_ids == KINDS.index("point")).nonzero().flatten().tolist()
    if point:
        near = 0
        for q in point:
            truth = cell_of_token(data.answer_words[q])
            guess = cell_of_token(tokenizer.id_to_token(int(pred[q])) or "")
            near += guess is not None and max(abs(guess[0] - truth[0]), abs(guess[1] - truth[1])) <= 1
        out["g_point_near"] = near / len(point)
    return out


def grounding_baselines(train, val) -> dict[str, float]:
    """Accuracy on `val` of always answering each kind's most frequent answer in `train`: the
    figure a model that ignores the image reaches (beats uniform chance, e.g. 1/64 cells)."""
    from .grounding_data import KINDS

    out = {}
    for i, kind in enumerate(KINDS):
        tr, va = train.answers[train.kind_ids == i], val.answers[val.kind_ids == i]
        if len(tr) and len(va):
            majority = int(torch.mode(tr).values)
            out[f"g_acc_{kind}"] = float((va == majority).float().mean())
    return out


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup over `warmup` steps, then cosine from lr to lr * min_lr_ratio at `steps`."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    span = max(cfg.steps - cfg.warmup, 1)
    progress = min((step - cfg.warmup) / span, 1.0)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def _step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step * 7_919 + 12_345) % (2**63))


@torch.no_grad()
def evaluate(model: TinyVLA, data: DemoSet, index: torch.Tensor, batch_size: int = 256) -> dict[str, float]:
    """Metrics on data[index], in float32 and without augmentation, overall and per task.

    loss: cross-entropy per action token; acc: fraction of action tokens in exactly the
    right bin; mae: mean |decoded predicted action - decoded target| per dimension, in
    action units ([-1, 1]; one bin is 2/256 wide).
    """
    was_training = model.training
    model.eval()
    width = 2.0 / model.config.action_bins
    n_tasks = len(data.tasks)
    total_loss, n_tokens = 0.0, 0
    hits_sum, err_sum, count = torch.zeros(n_tasks), torch.zeros(n_tasks), torch.zeros(n_tasks)
    for start in range(0, len(index), batch_size):
        batch = data.batch(index[start : start + batch_size])
        loss, pred = training_loss(model, batch)
        hits = (pred == batch.action_bins).float().mean(1)  # (B,)
        err = (pred - batch.action_bins).abs().float().mean(1) * width  # (B,)
        total_loss += float(loss) * batch.action_bins.numel()
        n_tokens += batch.action_bins.numel()
        hits_sum.index_add_(0, batch.task_ids, hits)
        err_sum.index_add_(0, batch.task_ids, err)
        count.index_add_(0, batch.task_ids, torch.ones_like(hits))
    model.train(was_training)
    n = count.sum().clamp(min=1)
    out = {"loss": total_loss / max(n_tokens, 1), "acc": float(hits_sum.sum() / n), "mae": float(err_sum.sum() / n)}
    for i, task in enumerate(data.tasks):
        if count[i] > 0:
            out[f"acc_{task}"] = float(hits_sum[i] / count[i])
            out[f"mae_{task}"] = float(err_sum[i] / count[i])
    return out


# -- checkpoints --------------------------------------------------------------------------
def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    sd = opt.state_dict()
    tensors = {
        f"state.{pid}.{name}": (v if torch.is_tensor(v) else torch.tensor(v)).detach().contiguous()
        for pid, st in sd["state"].items()
        for name, v in st.items()
    }
    return tensors, {"param_groups": json.dumps(sd["param_groups"])}


def _load_optimizer(opt: torch.optim.Optimizer, path: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        groups = json.loads(f.metadata()["param_groups"])
    tensors = load_file(str(path))
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in tensors.items():
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": groups})


def _save_checkpoint(root: Path, model: TinyVLA, tokenizer, opt, state: dict[str, Any], keep: int,
                     head: torch.nn.Module | None = None) -> Path:
    ckdir = root / CHECKPOINTS
    final = ckdir / f"step_{state['step']:07d}"
    tmp = ckdir / f".tmp_step_{state['step']:07d}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    save_tokenizer(tokenizer, tmp)
    tensors, meta = _optimizer_tensors(opt)
    save_file(tensors, str(tmp / OPTIM_NAME), metadata=meta)
    if head is not None:
        save_file({k: v.detach().contiguous() for k, v in head.state_dict().items()}, str(tmp / HEAD_NAME))
    (tmp / STATE_NAME).write_text(json.dumps(state, indent=2))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)  # a checkpoint directory exists only once it is complete
    for old in _checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _checkpoints(root: Path) -> list[Path]:
    ckdir = root / CHECKPOINTS
    if not ckdir.is_dir():
        return []
    return sorted(p for p in ckdir.glob("step_*") if (p / STATE_NAME).is_file())


def _read_log(path: Path, upto_step: int) -> list[dict]:
    """Log records up to and including `upto_step` (a resumed run rewrites what came after)."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            if rec["step"] <= upto_step:
                out.append(rec)
    return out


# -- the loop -------------------------------------------------------------------------------
@contextlib.contextmanager
def _closing(bar):
    try:
        yield bar
    finally:
        bar.close()


def _param_groups(model: TinyVLA, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.dim() >= 2 else no_decay).append(p)  # matrices and embeddings decay; norms, biases don't
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _load_data(cfg: TrainConfig, resume_from: Path | None):
    """Demos (actions stage), grounding sets and the tokenizer: (tokenizer, demos, grounding, info).

    demos: (train DemoSet, val DemoSet | None, tasks, val episodes) or None in the grounding stage;
    grounding: (train GroundingSet, val GroundingSet | None) or None when the run uses none.
    The tokenizer comes from the checkpoint being resumed or initialised from; otherwise it is
    built over the instruction words, plus every grounding word when grounding data is used.
    """
    from .grounding_data import grounded_tokenizer, load_grounding

    t0 = time.perf_counter()
    episodes = None
    if cfg.stage == "actions":
        episodes = load_episodes(cfg.data_dir, cfg.image_size, tasks=cfg.tasks, only_success=cfg.only_success)
    source = resume_from or (Path(cfg.init_from) if cfg.init_from else None)
    if source is not None:
        tokenizer = load_tokenizer(source)
        if episodes is not None:
            vocab = tokenizer.get_vocab()
            unknown = sorted({w for ep in episodes for w in ep.instruction.lower().split()} - set(vocab))
            if unknown:
                raise ConfigError(f"the demos' instructions use words the tokenizer of {source} lacks: {unknown[:10]}")
    elif cfg.grounding_dir:
        words = [w for ep in episodes or () for w in ep.instruction.lower().split()]
        n = cfg.image_size // cfg.patch_size
        tokenizer = grounded_tokenizer((n, n), words)
    else:
        tokenizer = build_tokenizer(episodes)
    demos = None
    if episodes is not None:
        tasks = tuple(sorted({ep.task for ep in episodes}))
        train_eps, val_eps = split_episodes(episodes, cfg.val_fraction, cfg.seed)
        binner = ActionBinner()
        train_set = make_demo_set(train_eps, tokenizer, binner, tasks)
        val_set = make_demo_set(val_eps, tokenizer, binner, tasks) if val_eps else None
        demos = (train_set, val_set, tasks, val_eps)
        log.info("loaded %d train episodes (%d steps), %d val episodes (%d steps) of %s in %.1fs",
                 train_set.n_episodes, len(train_set), len(val_eps), len(val_set) if val_set else 0, tasks,
                 time.perf_counter() - t0)
    grounding = None
    if cfg.grounding_dir:
        root = Path(cfg.grounding_dir)
        g_train = load_grounding(root / "train", tokenizer, cfg.image_size)
        g_val = load_grounding(root / "val", tokenizer, cfg.image_size) if (root / "val").is_dir() else None
        grounding = (g_train, g_val)
        log.info("loaded %d grounding questions on %d frames (val: %d on %d)", len(g_train), g_train.n_frames,
                 len(g_val) if g_val else 0, g_val.n_frames if g_val else 0)
    return tokenizer, demos, grounding


def _vision_step(model: TinyVLA, head, opt, trained: list, cfg: TrainConfig, g: torch.Generator, g_train
                 ) -> tuple[float, float]:
    """One optimizer step of the vision stage: frames, not questions, and the encoder and projector
    alone on the patch-word labels. The language model gets no gradient, so AdamW leaves it
    (and its weight decay) alone. Returns (loss, grad norm)."""
    index = torch.randint(g_train.n_frames, (cfg.batch_size,), generator=g)
    pixels = augment(g_train.images[index], g, 0, cfg.color_jitter)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
        loss, _ = patch_word_loss(model, head, pixels, g_train.patch_words[index])
    opt.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(trained, cfg.grad_clip)
    opt.step()
    return loss.item(), grad_norm.item()


def _question_or_action_step(model: TinyVLA, head, opt, trained: list, cfg: TrainConfig, g: torch.Generator,
                             g_train, train_set, n_image: int, aux: dict[str, list[float]]
                             ) -> tuple[tuple[float, float, float], bool]:
    """One optimizer step on a grounding batch or an action batch (the grounding and actions
    stages); returns ((loss, accuracy, grad norm), whether it was a grounding batch)."""
    is_grounding = cfg.stage == "grounding" or (
        cfg.grounding_share > 0 and float(torch.rand(1, generator=g)) < cfg.grounding_share)
    data = g_train if is_grounding else train_set
    index = torch.randint(len(data), (cfg.batch_size,), generator=g)
    if is_grounding:  # no shift: the answer names a patch
        pixels = augment(data.images[data.frame[index]], g, 0, cfg.color_jitter)
    else:
        pixels = augment(data.images[index], g, cfg.max_shift, cfg.color_jitter)
    batch = data.batch(index, pixels=pixels)
    keep = None  # grounding batches keep every token: a hidden target patch would make the answer a guess
    if cfg.image_dropout > 0 and not is_grounding:
        keep = image_keep_mask(cfg.batch_size, n_image, cfg.image_dropout, g)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
        if is_grounding:  # the question, the patch-word head and the instruction all read one encoding
            img = model.image_embeddings(pixels)  # (B, N, D)
            loss, pred = grounding_loss(model, batch, keep, img)
            if head is not None:
                pw, _ = patch_word_loss(model, head, pixels, data.patch_words[data.frame[index]], img)
                aux["pw_loss"].append(pw.item())
                loss = loss + cfg.patch_word_weight * pw
            if cfg.instruction_attention_weight > 0:
                frames = data.frame[index]
                swapped = torch.rand(cfg.batch_size, generator=g) < SWAPPED_SHARE
                ids, lengths, regions, swap_word = data.instructions(frames, swapped)
                rows = instruction_relevance(model, pixels, ids, lengths, data.proprio[frames],
                                             cfg.instruction_attention_layers, img, per_word=True)  # (L, B, P, N)
                ia = instruction_attention_loss(rows, regions, supervised_words(lengths, swap_word, rows.shape[2]))
                aux["ia_loss"].append(ia.item())
                loss = loss + cfg.instruction_attention_weight * ia
        else:
            loss, pred = training_loss(model, batch, cfg.bin_sigma, keep)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(trained, cfg.grad_clip)
    opt.step()
    target = batch.answers if is_grounding else batch.action_bins
    acc = float((pred == target).float().mean())
    return (loss.item(), acc, grad_norm.item()), is_grounding


def train(cfg: TrainConfig, *, command: str | None = None, stop_at: int | None = None) -> Path:
    """Run (or resume) training; returns the directory of the final checkpoint (out_dir/final).

    stop_at: leave off after this global step with a checkpoint there (and return its
    directory), as if the run were interrupted; a later call with resume=True continues it.
    """
    if stop_at is not None and not 0 < stop_at <= cfg.steps:
        raise ConfigError(f"stop_at must lie in 1..steps ({cfg.steps}), got {stop_at}")
    if stop_at is not None and stop_at % cfg.log_every:
        raise ConfigError(f"stop_at ({stop_at}) must be a multiple of log_every ({cfg.log_every})")
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out_dir)
    existing = _checkpoints(out)
    if existing and not cfg.resume:
        raise ConfigError(f"{out} already holds checkpoints ({existing[-1].name}); pass resume=True "
                          "(--resume) to continue that run, or choose another out_dir")
    resume_from = existing[-1] if (cfg.resume and existing) else None

    # data, all in memory
    tokenizer, demos, grounding = _load_data(cfg, resume_from)
    train_set, val_set, tasks, val_eps = demos if demos else (None, None, (), [])
    g_train, g_val = grounding if grounding else (None, None)
    val_index = None
    if val_set is not None:
        val_index = torch.arange(len(val_set))
        if cfg.eval_samples and len(val_set) > cfg.eval_samples:
            g = torch.Generator().manual_seed(cfg.seed + 99)
            val_index = torch.randperm(len(val_set), generator=g)[: cfg.eval_samples].sort().values
    g_val_sub = None
    if g_val is not None:  # periodic grounding evaluation on a fixed subset, the final one on all
        g_val_sub = g_val
        if cfg.eval_samples and len(g_val) > cfg.eval_samples:
            from .grounding_data import GroundingSet

            g = torch.Generator().manual_seed(cfg.seed + 98)
            sel = torch.randperm(len(g_val), generator=g)[: cfg.eval_samples].sort().values
            g_val_sub = GroundingSet(images=g_val.images, proprio=g_val.proprio, frame=g_val.frame[sel],
                                     ids=g_val.ids[sel], word_lengths=g_val.word_lengths[sel],
                                     answers=g_val.answers[sel], kind_ids=g_val.kind_ids[sel],
                                     answer_words=[g_val.answer_words[i] for i in sel.tolist()],
                                     n_frames=g_val.n_frames)

    # model and optimizer
    num_words = max(TinyVLAConfig.num_words, tokenizer.get_vocab_size())
    torch.manual_seed(cfg.seed)
    if cfg.init_from:
        init = TinyVLA.from_pretrained(cfg.init_from)
        model = TinyVLA(init.config)
        model.load_state_dict(init.state_dict())
        del init
    else:
        model = TinyVLA(cfg.model_config(num_words))
    if cfg.stage == "actions":  # dtp demo runs a checkpoint on the variant its demos came from
        model.config.extra[VARIANT_KEY] = demo_variant(cfg.data_dir)
    if tokenizer.get_vocab_size() > model.config.num_words:
        raise ConfigError(f"the tokenizer has {tokenizer.get_vocab_size()} words, the model's vocabulary "
                          f"{model.config.num_words}")
    if train_set is not None and (model.config.action_bins != ActionBinner().bins
                                  or model.config.action_dims != train_set.action_bins.shape[1]):
        raise ConfigError(f"the demos have {train_set.action_bins.shape[1]}-D actions, the model "
                          f"{model.config.action_dims}-D with {model.config.action_bins} bins")
    if g_train is not None and g_train.images.shape[1] != model.config.image_size:
        raise ConfigError(f"grounding frames are {g_train.images.shape[1]} px, the model reads {model.config.image_size}")
    head = None  # the patch-word head: a training aid over the projected image tokens, not part of the model
    if cfg.patch_word_weight > 0 or cfg.stage == "vision":
        if g_train.patch_words is None:
            raise ConfigError(f"the vision stage and patch_word_weight need frames with patch_words labels; {cfg.grounding_dir}/train "
                              "was written without them (regenerate with python -m dtp.tinyvla.grounding)")
        torch.manual_seed(cfg.seed + 1)
        head = torch.nn.Linear(model.config.hidden_size, len(g_train.patch_word_names))
    if cfg.instruction_attention_weight > 0:
        if g_train.instruction_ids is None:
            raise ConfigError(f"instruction_attention_weight needs frames with instruction targets; {cfg.grounding_dir}/train "
                              "was written without them (regenerate with python -m dtp.tinyvla.grounding)")
        bad_layers = [l for l in cfg.instruction_attention_layers if l >= model.config.num_layers]
        if bad_layers:
            raise ConfigError(f"instruction_attention_layers {bad_layers} are out of range for a "
                              f"{model.config.num_layers}-layer model")
    val_patch_words = None  # (F, W, N): the val frames' labels over the head's words
    if head is not None and g_val is not None and g_val.patch_words is not None:
        try:
            val_patch_words = g_val.patch_words_over(g_train.patch_word_names)
        except DataError as e:
            raise ConfigError(f"grounding val frames: {e}") from e
    groups = _param_groups(model, cfg.weight_decay)
    if head is not None:
        groups[0]["params"].append(head.weight)
        groups[1]["params"].append(head.bias)
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8, fused=True)
    trained = [p for group in groups for p in group["params"]]
    start_step, seconds = 0, 0.0
    if resume_from is not None:
        loaded = TinyVLA.from_pretrained(resume_from)
        if asdict(loaded.config) != asdict(model.config):
            raise CheckpointError(f"{resume_from} holds a model of other sizes than this TrainConfig asks for")
        model.load_state_dict(loaded.state_dict())
        if head is not None:
            if not (resume_from / HEAD_NAME).is_file():
                raise CheckpointError(f"{resume_from} has no {HEAD_NAME}: it was saved by a run without patch_word_weight")
            saved = load_file(str(resume_from / HEAD_NAME))
            if saved["weight"].shape != head.weight.shape:
                raise CheckpointError(f"{resume_from / HEAD_NAME} predicts {saved['weight'].shape[0]} patch words, "
                                      f"these frames have {head.weight.shape[0]}: the run was started on other frames")
            head.load_state_dict(saved)
        _load_optimizer(opt, resume_from / OPTIM_NAME)
        st = json.loads((resume_from / STATE_NAME).read_text())
        start_step, seconds = int(st["step"]), float(st["seconds"])
        log.info("resuming from %s (step %d)", resume_from, start_step)
    n_params = sum(p.numel() for p in model.parameters())
    n_image = model.config.num_image_tokens

    out.mkdir(parents=True, exist_ok=True)  # only now: a bad data folder or config leaves nothing behind
    (out / "train_config.json").write_text(json.dumps(cfg.to_json(), indent=2))
    log_path = out / LOG_NAME
    records = _read_log(log_path, start_step)
    with log_path.open("w") as f:  # drop records a crashed run wrote after its last checkpoint
        f.writelines(json.dumps(r) + "\n" for r in records)

    model.train()
    window: list[tuple[bool, float, float, float]] = []  # (grounding step?, loss, acc, grad norm)
    aux: dict[str, list[float]] = {"pw_loss": [], "ia_loss": []}  # auxiliary losses of the window's steps
    last_val: dict[str, float] = {}
    bar = tqdm(total=cfg.steps, initial=start_step, disable=not cfg.progress, desc=f"train tinyvla ({cfg.stage})",
               dynamic_ncols=True)
    tick = time.perf_counter()
    with log_path.open("a") as logf, _closing(bar):  # the bar closes before any error or Ctrl-C is printed

        def emit(rec: dict) -> None:
            logf.write(json.dumps(rec) + "\n")
            logf.flush()

        def run_eval(step: int, kind: str = "val", full: bool = False) -> dict[str, float]:
            nonlocal last_val
            metrics: dict[str, float] = {}
            if val_set is not None:
                metrics.update(evaluate(model, val_set, torch.arange(len(val_set)) if full else val_index))
            if g_val is not None:
                if cfg.stage != "vision":  # the vision stage leaves the language model untrained
                    metrics.update(evaluate_grounding(model, g_val if full else g_val_sub, tokenizer))
                if val_patch_words is not None:
                    metrics.update(evaluate_patch_words(model, head, g_val, val_patch_words))
                if cfg.instruction_attention_weight > 0 and g_val.instruction_ids is not None:
                    metrics.update(evaluate_instruction_attention(model, g_val, cfg.instruction_attention_layers))
            if metrics:
                last_val = metrics
                emit({"kind": kind, "step": step, **{k: round(v, 6) for k, v in metrics.items()}})
                log.info("step %d %s %s", step, kind, {k: round(v, 4) for k, v in metrics.items()
                                                      if k in ("loss", "acc", "g_acc", "g_acc_point", "g_acc_colour", "pw_f1",
                                                               "ia_cover", "ia_cover_swapped")})
            return metrics

        end = cfg.steps if stop_at is None else max(start_step, stop_at)
        for step in range(start_step, end):
            lr = lr_at(step, cfg)
            for group in opt.param_groups:
                group["lr"] = lr
            g = _step_generator(cfg.seed, step)
            if cfg.stage == "vision":
                loss_value, grad_norm = _vision_step(model, head, opt, trained, cfg, g, g_train)
                aux["pw_loss"].append(loss_value)
                window.append((None, 0.0, 0.0, grad_norm))  # neither kind: only pw_loss is logged
            else:
                loss_acc_grad, is_grounding = _question_or_action_step(
                    model, head, opt, trained, cfg, g, g_train, train_set, n_image, aux)
                window.append((is_grounding, *loss_acc_grad))
            done = step + 1
            bar.update(1)
            if done % cfg.log_every == 0 or done == cfg.steps:
                now = time.perf_counter()
                seconds += now - tick
                tick = now
                rec = {"kind": "train", "step": done}
                for prefix, sel in (("", [w for w in window if w[0] is False]), ("g_", [w for w in window if w[0]])):
                    if sel:
                        mean = np.mean([w[1:] for w in sel], axis=0)
                        rec.update({f"{prefix}loss": round(float(mean[0]), 6), f"{prefix}acc": round(float(mean[1]), 6)})
                for name, values in aux.items():
                    if values:
                        rec[name] = round(float(np.mean(values)), 6)
                rec.update({"lr": lr, "grad_norm": round(float(np.mean([w[3] for w in window])), 6),
                            "seconds": round(seconds, 2)})
                window = []
                aux = {name: [] for name in aux}
                emit(rec)
                bar.set_postfix(loss=rec.get("loss", rec.get("g_loss", rec.get("pw_loss"))), val=last_val.get("acc", last_val.get("g_acc")))
            if done % cfg.eval_every == 0 and done != cfg.steps:
                run_eval(done)
            if done % cfg.save_every == 0 or done in (cfg.steps, stop_at):
                seconds += time.perf_counter() - tick
                tick = time.perf_counter()
                _save_checkpoint(out, model, tokenizer, opt, {"step": done, "seconds": round(seconds, 2)},
                                 cfg.keep_checkpoints, head)
        bar.close()
        if end < cfg.steps:
            log.info("stopped at step %d of %d (resume=True continues)", end, cfg.steps)
            return _checkpoints(out)[-1]

        # final: full validation (all held-out steps and questions) and the shipped files
        final_val = run_eval(cfg.steps, "val_final", full=True)
    seconds += time.perf_counter() - tick

    final = out / FINAL
    model.save_pretrained(final)
    save_tokenizer(tokenizer, final)
    curve = _read_log(log_path, cfg.steps)
    train_recs = [r for r in curve if r["kind"] == "train"]
    stride = max(1, len(train_recs) // 200)
    data_info: dict[str, Any] = {"tasks": list(tasks)}
    if train_set is not None:
        data_info.update(train_episodes=train_set.n_episodes, train_steps=len(train_set), val_episodes=len(val_eps),
                         val_steps=len(val_set) if val_set else 0,
                         val_seeds={t: sorted(e.seed for e in val_eps if e.task == t) for t in tasks})
    if g_train is not None:
        data_info["grounding"] = {"train_frames": g_train.n_frames, "train_questions": len(g_train),
                                  "val_frames": g_val.n_frames if g_val else 0, "val_questions": len(g_val) if g_val else 0}
        if g_val is not None:
            data_info["grounding"]["majority_baseline"] = {k: round(v, 6) for k, v in grounding_baselines(g_train, g_val).items()}
            data_info["grounding"]["uniform_chance_point"] = 1 / n_image
    summary = {
        "command": command or f"dtp.tinyvla.train.train({cfg!r})",
        "config": cfg.to_json(),
        "model": asdict(model.config),
        "parameters": n_params,
        "data": data_info,
        "seconds": round(seconds, 1),
        "final_train": train_recs[-1] if train_recs else {},
        "final_val": {k: round(v, 6) for k, v in final_val.items()},
        "curve": {"train": train_recs[::stride] + ([train_recs[-1]] if train_recs and (len(train_recs) - 1) % stride else []),
                  "val": [r for r in curve if r["kind"] == "val"]},
        "torch": torch.__version__,
        "threads": cfg.threads,
    }
    (final / SUMMARY_NAME).write_text(json.dumps(summary, indent=1))
    log.info("done: %d steps in %.0fs, final checkpoint %s", cfg.steps, seconds, final)
    return final


# -- command line -----------------------------------------------------------------------------
_HELP = {
    "data_dir": "folder of demonstrations written by 'dtp collect'",
    "out_dir": "run folder: checkpoints, log, final model (rerun the same command to resume)",
    "steps": "optimizer steps",
    "batch_size": "samples (control steps) per batch",
    "lr": "peak learning rate",
    "min_lr_ratio": "the cosine ends at lr * this",
    "weight_decay": "AdamW weight decay of matrices and embeddings",
    "warmup": "linear warmup steps",
    "grad_clip": "gradient norm clip",
    "bin_sigma": "soft targets: std in bins of a Gaussian over neighbouring action bins (0: one-hot)",
    "seed": "seed of the model, batches, augmentation and validation split",
    "image_size": "model input size in pixels (demos are resized)",
    "patch_size": "vision patch size in pixels",
    "vision_width": "vision encoder width",
    "hidden_size": "language model width",
    "num_layers": "language model layers",
    "num_heads": "attention heads",
    "intermediate_size": "MLP width",
    "tasks": "comma-separated task names (default: every task folder in --data-dir)",
    "only_success": "train on successful demonstrations only",
    "val_fraction": "share of each task's episodes held out for validation",
    "max_shift": "random shift augmentation, in pixels",
    "color_jitter": "brightness/contrast jitter range (+-)",
    "log_every": "steps per log line",
    "eval_every": "steps between validation passes",
    "eval_samples": "validation steps per periodic pass (0: all)",
    "save_every": "steps between checkpoints (a multiple of --log-every)",
    "keep_checkpoints": "checkpoints kept",
    "resume": "continue the checkpoints in --out-dir even if the options changed (the same options resume anyway)",
    "threads": "torch threads (2 on a shared 2-core machine stalls)",
    "precision": "autocast dtype of the training forward pass",
    "progress": "progress bar",
    "stage": "'actions' (behaviour cloning, optionally mixed with grounding), 'grounding' (the VLM stage: "
             "answers to questions about simulator frames) or 'vision' (the image encoder alone on the frames' "
             "patch-word labels, before the VLM stage; docs/training.md)",
    "grounding_dir": "frames written by 'python -m dtp.tinyvla.grounding' (train/ and val/ inside); "
                     "needed by the grounding stage and --grounding-share (default: none)",
    "grounding_share": "share of the actions stage's batches that are grounding batches",
    "init_from": "start from this checkpoint: its architecture and tokenizer, the size options ignored "
                 "(default: a fresh model)",
    "num_registers": "register tokens after the image span (never image tokens, never pruned)",
    "image_dropout": "each action sample hides up to this share of its image tokens (mask, original positions)",
    "patch_word_weight": "weight of the dense patch-word loss on grounding batches: a linear head on each image "
                         "token predicts the colour/noun/shape words of the object in its patch (0: off)",
    "instruction_attention_weight": "weight of the instruction-attention loss on grounding batches: the attention of "
                                    "each frame's task instruction (half the time its colour-swapped twin) to the image "
                                    "is pulled toward the patches of the parts it names (0: off)",
    "instruction_attention_layers": "language-model layers whose instruction->image attention that loss trains",
}
_WARMUP_DEFAULT = TrainConfig.warmup


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Appends '(default: X)' except where the default is None (the help text says what None means)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        return action.help or "" if action.default is None else super()._get_help_string(action)


def _task_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _parser(prog: str = "python -m dtp.tinyvla.train", parser_class=argparse.ArgumentParser) -> argparse.ArgumentParser:
    p = parser_class(prog=prog, description="Train TinyVLA on demonstrations (behaviour cloning).",
                                formatter_class=_Help)
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        help_ = _HELP.get(f.name, "")
        if f.name == "tasks":
            p.add_argument(flag, nargs="+", type=_task_list, default=None, help=help_)
        elif f.name == "instruction_attention_layers":
            p.add_argument(flag, nargs="+", type=int, default=f.default, help=help_)
        elif f.name == "warmup":
            p.add_argument(flag, type=int, default=None,
                           help=f"{help_} (default: {_WARMUP_DEFAULT}, clipped to --steps minus 1 for shorter runs)")
        elif f.name == "precision":
            p.add_argument(flag, choices=("bf16", "fp32"), default=f.default, help=help_)
        elif f.type in ("bool", bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=help_)
        else:
            kind = {"int": int, "float": float, "str": str}.get(str(f.type), str)
            p.add_argument(flag, type=kind, default=f.default, help=help_)
    return p


def _as_flags(message: str) -> str:
    """A TrainConfig message in command-line words: 'batch_size' -> '--batch-size'."""
    message = message.removeprefix("TrainConfig: ")
    names = sorted((f.name for f in fields(TrainConfig)), key=len, reverse=True)
    return re.sub(r"\b(" + "|".join(names) + r")\b", lambda m: "--" + m.group(1).replace("_", "-"), message)


def config_from_args(argv: list[str] | None = None, prog: str = "python -m dtp.tinyvla.train",
                     parser_class=argparse.ArgumentParser) -> TrainConfig:
    """TrainConfig from command-line words; --tasks takes names separated by commas or spaces."""
    ns = vars(_parser(prog, parser_class).parse_args(argv))
    if ns["tasks"] is not None:
        ns["tasks"] = tuple(t for group in ns["tasks"] for t in group)
    ns["instruction_attention_layers"] = tuple(ns["instruction_attention_layers"])
    if ns["warmup"] is None:  # the default warmup would not fit a short run: clip it
        ns["warmup"] = min(_WARMUP_DEFAULT, max(0, ns["steps"] - 1)) if isinstance(ns["steps"], int) else _WARMUP_DEFAULT
    try:
        return TrainConfig(**ns)
    except ConfigError as e:
        raise ConfigError(_as_flags(str(e))) from None


def resume_if_same(cfg: TrainConfig) -> TrainConfig:
    """Rerunning the command of an interrupted run resumes it, as `dtp eval` does.

    out_dir holds checkpoints: the same options (apart from --resume/--progress) continue
    them; other options are refused, naming what differs, unless --resume says to continue anyway.
    """
    out = Path(cfg.out_dir)
    if cfg.resume or not _checkpoints(out):
        return cfg
    stored_path = out / "train_config.json"
    ignore = {"resume", "progress"}
    stored = json.loads(stored_path.read_text()) if stored_path.is_file() else {}
    if stored:  # an option added since the run started counts as its default
        stored = {**TrainConfig().to_json(), **stored}
    old = {k: v for k, v in stored.items() if k not in ignore}
    new = {k: v for k, v in cfg.to_json().items() if k not in ignore}
    if old != new:
        from ..config_diff import config_differences

        diffs = config_differences(old, new)
        raise ConfigError(
            f"{out} holds checkpoints of a different training run ({'; '.join(_as_flags(d) for d in diffs[:6])}). "
            "Rerun with its options to resume it, add --resume to continue it with these options, "
            "or choose another --out-dir"
        )
    log.info("resuming the run in %s from %s", out, _checkpoints(out)[-1].name)
    return replace(cfg, resume=True)


def saved_step(out_dir: str | Path) -> int:
    """Step of the last complete checkpoint in out_dir (0 when there is none)."""
    ck = _checkpoints(Path(out_dir))
    return int(json.loads((ck[-1] / STATE_NAME).read_text())["step"]) if ck else 0


def interrupted_note(cfg: TrainConfig | None) -> str:
    """What a Ctrl-C left behind, in one line."""
    if cfg is None:
        return "interrupted"
    step = saved_step(cfg.out_dir)
    if step == 0:
        return (f"interrupted before the first checkpoint (one every {cfg.save_every} steps): nothing saved; "
                "rerun the same command to start again")
    return (f"interrupted: checkpoint at step {step} of {cfg.steps} saved "
            f"(one every {cfg.save_every} steps); rerun the same command to resume")


def main(argv: list[str] | None = None, prog: str = "python -m dtp.tinyvla.train") -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    argv = sys.argv[1:] if argv is None else argv
    cfg = None
    try:
        cfg = resume_if_same(config_from_args(argv, prog))
        final = train(cfg, command=f"{prog} " + " ".join(argv))
    except ConfigError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: {interrupted_note(cfg)}", file=sys.stderr)
        return 130
    print(final)
    return 0


if __name__ == "__main__":
    sys.exit(main())
