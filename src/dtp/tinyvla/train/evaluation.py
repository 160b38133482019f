"""Validation metrics of each stage: actions (loss, bin accuracy, MAE per task), grounding answers,
the patch-word head, and the instruction attention, all in float32 without augmentation."""

from __future__ import annotations

import torch

from ...config import DTPConfig
from ...core import important_region
from ..data import DemoSet, to_pixels
from ..grounding_data import KINDS, cell_of_token
from ..modeling import TinyVLA
from .config import TrainConfig
from .datasets import RunData
from .losses import (grounding_loss, instruction_attention_loss, instruction_relevance, mean_over_words,
                     patch_word_loss, supervised_words, training_loss)

__all__ = ["validation_metrics", "evaluate", "evaluate_grounding", "grounding_baselines", "evaluate_patch_words",
           "evaluate_instruction_attention"]


def validation_metrics(cfg: TrainConfig, model: TinyVLA, head: torch.nn.Linear | None, data: RunData,
                       val_patch_words: torch.Tensor | None, full: bool = False) -> dict[str, float]:
    """Every figure the run's validation data gives: actions, grounding answers (not in the vision
    stage, which leaves the language model untrained), the patch-word head, the instruction attention.
    A periodic evaluation reads the fixed subsets of RunData, the final one (full) everything."""
    metrics: dict[str, float] = {}
    if data.val_set is not None:
        index = torch.arange(len(data.val_set)) if full else data.val_index
        metrics.update(evaluate(model, data.val_set, index))
    g_val = data.g_val
    if g_val is not None:
        if cfg.stage != "vision":
            metrics.update(evaluate_grounding(model, g_val if full else data.g_val_subset, data.tokenizer))
        if val_patch_words is not None:
            metrics.update(evaluate_patch_words(model, head, g_val, val_patch_words))
        if cfg.instruction_attention_weight > 0 and g_val.instruction_ids is not None:
            metrics.update(evaluate_instruction_attention(model, g_val, cfg.instruction_attention_layers))
    return metrics


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
            r[variant] = mean_over_words(rows, lengths).mean(0)  # (B, N): Eq. 1, averaged over layers
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


@torch.no_grad()
def evaluate_grounding(model: TinyVLA, data, tokenizer, batch_size: int = 256) -> dict[str, float]:
    """Answer accuracy on every question of `data` (a GroundingSet), overall and per kind, in float32.

    g_point_near: pointing answers within one cell (row and column) of the true cell.
    """
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
    out = {}
    for i, kind in enumerate(KINDS):
        tr, va = train.answers[train.kind_ids == i], val.answers[val.kind_ids == i]
        if len(tr) and len(va):
            majority = int(torch.mode(tr).values)
            out[f"g_acc_{kind}"] = float((va == majority).float().mean())
    return out


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
