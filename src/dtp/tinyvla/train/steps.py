"""One optimizer step of each stage, and what step k depends on: its learning rate and its generator.

Step k draws everything random (stage mix, batch, augmentation, dropout, swapped instructions)
from `step_generator(seed, k)`, in a fixed order, so a resumed run repeats a straight one exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..data import augment
from ..modeling import TinyVLA
from .config import TrainConfig
from .datasets import RunData
from .losses import (grounding_loss, image_keep_mask, instruction_attention_loss, instruction_relevance,
                     patch_word_loss, supervised_words, training_loss)
from .precision import uses_bf16

__all__ = ["StepResult", "optimizer_step", "lr_at", "step_generator", "SWAPPED_SHARE"]

SWAPPED_SHARE = 0.5  # share of instruction-attention samples that read the colour-swapped twin


@dataclass(frozen=True)
class StepResult:
    """What one optimizer step reports to the training log."""

    grounding: bool | None  # True: a grounding batch; False: an action batch; None: the vision stage's frames
    loss: float  # of the answers or actions (0.0 in the vision stage, whose loss is aux["pw_loss"])
    acc: float
    grad_norm: float
    aux: dict[str, float] = field(default_factory=dict)  # auxiliary losses: pw_loss, ia_loss


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup over `warmup` steps, then cosine from lr to lr * min_lr_ratio at `steps`."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    span = max(cfg.steps - cfg.warmup, 1)
    progress = min((step - cfg.warmup) / span, 1.0)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step * 7_919 + 12_345) % (2**63))


def optimizer_step(cfg: TrainConfig, model: TinyVLA, head: torch.nn.Linear | None, opt: torch.optim.Optimizer,
                   trained: list[torch.nn.Parameter], data: RunData, g: torch.Generator) -> StepResult:
    """One step of cfg.stage: the vision stage's frames, or a grounding or an action batch."""
    if cfg.stage == "vision":
        return _vision_step(cfg, model, head, opt, trained, data, g)
    return _question_or_action_step(cfg, model, head, opt, trained, data, g)


def _vision_step(cfg: TrainConfig, model: TinyVLA, head: torch.nn.Linear, opt: torch.optim.Optimizer,
                 trained: list[torch.nn.Parameter], data: RunData, g: torch.Generator) -> StepResult:
    """Frames, not questions, and the encoder and projector alone on the patch-word labels. The
    language model gets no gradient, so AdamW leaves it (and its weight decay) alone."""
    g_train = data.g_train
    index = torch.randint(g_train.n_frames, (cfg.batch_size,), generator=g)
    pixels = augment(g_train.images[index], g, 0, cfg.color_jitter)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=uses_bf16(cfg.precision)):
        loss, _ = patch_word_loss(model, head, pixels, g_train.patch_words[index])
    grad_norm = _update(cfg, opt, trained, loss)
    return StepResult(grounding=None, loss=0.0, acc=0.0, grad_norm=grad_norm, aux={"pw_loss": loss.item()})


def _question_or_action_step(cfg: TrainConfig, model: TinyVLA, head: torch.nn.Linear | None,
                             opt: torch.optim.Optimizer, trained: list[torch.nn.Parameter], data: RunData,
                             g: torch.Generator) -> StepResult:
    """A grounding batch (the grounding stage, or grounding_share of the actions stage's steps) or an
    action batch."""
    is_grounding = cfg.stage == "grounding" or (
        cfg.grounding_share > 0 and float(torch.rand(1, generator=g)) < cfg.grounding_share)
    source = data.g_train if is_grounding else data.train_set
    index = torch.randint(len(source), (cfg.batch_size,), generator=g)
    if is_grounding:  # no shift: the answer names a patch
        pixels = augment(source.images[source.frame[index]], g, 0, cfg.color_jitter)
    else:
        pixels = augment(source.images[index], g, cfg.max_shift, cfg.color_jitter)
    batch = source.batch(index, pixels=pixels)
    keep = None  # grounding batches keep every token: a hidden target patch would make the answer a guess
    if cfg.image_dropout > 0 and not is_grounding:
        keep = image_keep_mask(cfg.batch_size, model.config.num_image_tokens, cfg.image_dropout, g)
    aux: dict[str, float] = {}
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=uses_bf16(cfg.precision)):
        if is_grounding:
            loss, pred = _grounding_objective(cfg, model, head, source, index, pixels, batch, g, aux)
        else:
            loss, pred = training_loss(model, batch, cfg.bin_sigma, keep)
    grad_norm = _update(cfg, opt, trained, loss)
    target = batch.answers if is_grounding else batch.action_bins
    acc = float((pred == target).float().mean())
    return StepResult(grounding=is_grounding, loss=loss.item(), acc=acc, grad_norm=grad_norm, aux=aux)


def _grounding_objective(cfg: TrainConfig, model: TinyVLA, head: torch.nn.Linear | None, g_train, index: torch.Tensor,
                         pixels: torch.Tensor, batch, g: torch.Generator, aux: dict[str, float]
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """The answers' loss plus, when asked, the weighted patch-word and instruction-attention losses
    (their values go into aux); the question, the head and the instruction all read one encoding.
    Returns (loss, predicted word ids (B,))."""
    img = model.image_embeddings(pixels)  # (B, N, D)
    loss, pred = grounding_loss(model, batch, None, img)
    frames = g_train.frame[index]  # (B,)
    if head is not None:
        pw, _ = patch_word_loss(model, head, pixels, g_train.patch_words[frames], img)
        aux["pw_loss"] = pw.item()
        loss = loss + cfg.patch_word_weight * pw
    if cfg.instruction_attention_weight > 0:
        swapped = torch.rand(cfg.batch_size, generator=g) < SWAPPED_SHARE
        ids, lengths, regions, swap_word = g_train.instructions(frames, swapped)
        rows = instruction_relevance(model, pixels, ids, lengths, g_train.proprio[frames],
                                     cfg.instruction_attention_layers, img, per_word=True)  # (L, B, P, N)
        ia = instruction_attention_loss(rows, regions, supervised_words(lengths, swap_word, rows.shape[2]))
        aux["ia_loss"] = ia.item()
        loss = loss + cfg.instruction_attention_weight * ia
    return loss, pred


def _update(cfg: TrainConfig, opt: torch.optim.Optimizer, trained: list[torch.nn.Parameter], loss: torch.Tensor
            ) -> float:
    """Backward, clip the gradient norm to grad_clip, step; returns the norm before clipping."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(trained, cfg.grad_clip)
    opt.step()
    return grad_norm.item()
