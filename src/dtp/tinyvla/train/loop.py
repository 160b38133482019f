"""The training loop: data, model, optimizer, then one loop with evaluation and checkpoints."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from tqdm.auto import tqdm

from ...actions import ActionBinner
from ...errors import CheckpointError, ConfigError
from ..data import DataError, augment, build_tokenizer, demo_variant, load_episodes, make_demo_set, split_episodes
from ..modeling import VARIANT_KEY, TinyVLA, TinyVLAConfig
from ..tokenizer import load_tokenizer, save_tokenizer
from .checkpoint import (FINAL, HEAD_NAME, LOG_NAME, OPTIM_NAME, STATE_NAME, SUMMARY_NAME, checkpoints, load_optimizer,
                         read_log, save_checkpoint)
from .config import TrainConfig
from .evaluation import (evaluate, evaluate_grounding, evaluate_instruction_attention, evaluate_patch_words,
                         grounding_baselines)
from .losses import (grounding_loss, image_keep_mask, instruction_attention_loss, instruction_relevance,
                     patch_word_loss, supervised_words, training_loss)

__all__ = ["train", "lr_at"]

log = logging.getLogger(__name__)

SWAPPED_SHARE = 0.5  # share of instruction-attention samples that read the colour-swapped twin


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup over `warmup` steps, then cosine from lr to lr * min_lr_ratio at `steps`."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    span = max(cfg.steps - cfg.warmup, 1)
    progress = min((step - cfg.warmup) / span, 1.0)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def _step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step * 7_919 + 12_345) % (2**63))


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
    from ..grounding_data import grounded_tokenizer, load_grounding

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
    existing = checkpoints(out)
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
            from ..grounding_data import GroundingSet

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
        load_optimizer(opt, resume_from / OPTIM_NAME)
        st = json.loads((resume_from / STATE_NAME).read_text())
        start_step, seconds = int(st["step"]), float(st["seconds"])
        log.info("resuming from %s (step %d)", resume_from, start_step)
    n_params = sum(p.numel() for p in model.parameters())
    n_image = model.config.num_image_tokens

    out.mkdir(parents=True, exist_ok=True)  # only now: a bad data folder or config leaves nothing behind
    (out / "train_config.json").write_text(json.dumps(cfg.to_json(), indent=2))
    log_path = out / LOG_NAME
    records = read_log(log_path, start_step)
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
                save_checkpoint(out, model, tokenizer, opt, {"step": done, "seconds": round(seconds, 2)},
                                 cfg.keep_checkpoints, head)
        bar.close()
        if end < cfg.steps:
            log.info("stopped at step %d of %d (resume=True continues)", end, cfg.steps)
            return checkpoints(out)[-1]

        # final: full validation (all held-out steps and questions) and the shipped files
        final_val = run_eval(cfg.steps, "val_final", full=True)
    seconds += time.perf_counter() - tick

    final = out / FINAL
    model.save_pretrained(final)
    save_tokenizer(tokenizer, final)
    curve = read_log(log_path, cfg.steps)
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
