"""The training loop: data, model and optimizer, then one loop that logs, evaluates and saves."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ...errors import ConfigError
from ..modeling import TinyVLA
from .build import build_model, build_optimizer, check_instruction_attention, patch_word_head, val_patch_word_labels
from .checkpoint import checkpoints, read_log, restore, save_checkpoint, save_final, start_run_files
from .config import TrainConfig
from .datasets import RunData, load_run_data
from .evaluation import grounding_baselines, validation_metrics
from .precision import uses_bf16
from .steps import StepResult, lr_at, optimizer_step, step_generator

__all__ = ["train"]

log = logging.getLogger(__name__)

_LOGGED_VAL = ("loss", "acc", "g_acc", "g_acc_point", "g_acc_colour", "pw_f1", "ia_cover", "ia_cover_swapped")


def train(cfg: TrainConfig, *, command: str | None = None, stop_at: int | None = None) -> Path:
    """Run (or resume) training; returns the directory of the final checkpoint (out_dir/final).

    stop_at: leave off after this global step with a checkpoint there (and return its
    directory), as if the run were interrupted; a later call with resume=True continues it.
    """
    _check_stop_at(cfg, stop_at)
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out_dir)
    resume_from = _resume_point(cfg, out)

    # data, all in memory; model, patch-word head and optimizer, all checked before anything is written
    data = load_run_data(cfg, resume_from)
    model = build_model(cfg, data)
    head = patch_word_head(cfg, model, data)
    check_instruction_attention(cfg, model, data)
    val_patch_words = val_patch_word_labels(head, data)
    opt, trained = build_optimizer(cfg, model, head)
    start_step, seconds = restore(resume_from, model, head, opt) if resume_from is not None else (0, 0.0)
    log_path = start_run_files(out, cfg.to_json(), start_step)

    log.info("forward pass in %s (--precision %s)", "bf16" if uses_bf16(cfg.precision) else "fp32", cfg.precision)
    model.train()
    window, clock = _Window(), _Clock(seconds)
    end = cfg.steps if stop_at is None else max(start_step, stop_at)
    bar = tqdm(total=cfg.steps, initial=start_step, disable=not cfg.progress, desc=f"train tinyvla ({cfg.stage})",
               dynamic_ncols=True)
    with log_path.open("a") as f, _closing(bar):  # the bar closes before any error or Ctrl-C is printed
        run_log = _RunLog(f)
        for step in range(start_step, end):
            lr = lr_at(step, cfg)
            for group in opt.param_groups:
                group["lr"] = lr
            window.add(optimizer_step(cfg, model, head, opt, trained, data, step_generator(cfg.seed, step)))
            done = step + 1
            bar.update(1)
            if done % cfg.log_every == 0 or done == cfg.steps:
                rec = run_log.write(window.record(done, lr, clock.tick()))
                bar.set_postfix(loss=rec.get("loss", rec.get("g_loss", rec.get("pw_loss"))),
                                val=run_log.last_val.get("acc", run_log.last_val.get("g_acc")))
            if done % cfg.eval_every == 0 and done != cfg.steps:
                run_log.validation(done, "val", validation_metrics(cfg, model, head, data, val_patch_words))
            if done % cfg.save_every == 0 or done in (cfg.steps, stop_at):
                save_checkpoint(out, model, data.tokenizer, opt, {"step": done, "seconds": round(clock.tick(), 2)},
                                cfg.keep_checkpoints, head)
        bar.close()
        if end < cfg.steps:
            log.info("stopped at step %d of %d (resume=True continues)", end, cfg.steps)
            return checkpoints(out)[-1]

        # final: full validation (all held-out steps and questions) and the shipped files
        final_val = validation_metrics(cfg, model, head, data, val_patch_words, full=True)
        run_log.validation(cfg.steps, "val_final", final_val)
    seconds = clock.tick()
    summary = _summary(cfg, model, data, final_val, read_log(log_path, cfg.steps), seconds, command)
    final = save_final(out, model, data.tokenizer, summary)
    log.info("done: %d steps in %.0fs, final checkpoint %s", cfg.steps, seconds, final)
    return final


def _check_stop_at(cfg: TrainConfig, stop_at: int | None) -> None:
    if stop_at is not None and not 0 < stop_at <= cfg.steps:
        raise ConfigError(f"stop_at must lie in 1..steps ({cfg.steps}), got {stop_at}")
    if stop_at is not None and stop_at % cfg.log_every:
        raise ConfigError(f"stop_at ({stop_at}) must be a multiple of log_every ({cfg.log_every})")


def _resume_point(cfg: TrainConfig, out: Path) -> Path | None:
    """The last checkpoint in out when cfg.resume asks to continue it; a run never overwrites one otherwise."""
    existing = checkpoints(out)
    if existing and not cfg.resume:
        raise ConfigError(f"{out} already holds checkpoints ({existing[-1].name}); pass resume=True "
                          "(--resume) to continue that run, or choose another out_dir")
    return existing[-1] if (cfg.resume and existing) else None


@contextlib.contextmanager
def _closing(bar):
    try:
        yield bar
    finally:
        bar.close()


class _Clock:
    """Training seconds, continuing a resumed run's count: tick() adds the time since the last tick."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._last = time.perf_counter()

    def tick(self) -> float:
        now = time.perf_counter()
        self.seconds += now - self._last
        self._last = now
        return self.seconds


class _Window:
    """The steps since the last train record: their means make the next one."""

    def __init__(self) -> None:
        self.rows: list[tuple[bool | None, float, float, float]] = []  # (grounding batch?, loss, acc, grad norm)
        self.aux: dict[str, list[float]] = {"pw_loss": [], "ia_loss": []}  # auxiliary losses of the window's steps

    def add(self, result: StepResult) -> None:
        self.rows.append((result.grounding, result.loss, result.acc, result.grad_norm))
        for name, value in result.aux.items():
            self.aux[name].append(value)

    def record(self, step: int, lr: float, seconds: float) -> dict[str, Any]:
        """{"kind": "train", step, loss/acc (action batches), g_loss/g_acc (grounding batches), pw_loss,
        ia_loss, lr, grad_norm, seconds}, each kind only when the window had one; empties the window."""
        rows = self.rows
        rec: dict[str, Any] = {"kind": "train", "step": step}
        for prefix, sel in (("", [w for w in rows if w[0] is False]), ("g_", [w for w in rows if w[0]])):
            if sel:
                mean = np.mean([w[1:] for w in sel], axis=0)
                rec.update({f"{prefix}loss": round(float(mean[0]), 6), f"{prefix}acc": round(float(mean[1]), 6)})
        for name, values in self.aux.items():
            if values:
                rec[name] = round(float(np.mean(values)), 6)
        rec.update({"lr": lr, "grad_norm": round(float(np.mean([w[3] for w in rows])), 6),
                    "seconds": round(seconds, 2)})
        self.rows, self.aux = [], {name: [] for name in self.aux}
        return rec


class _RunLog:
    """The open train_log.jsonl: each record written and flushed as it comes; the last validation kept."""

    def __init__(self, f: IO[str]) -> None:
        self.f = f
        self.last_val: dict[str, float] = {}

    def write(self, rec: dict[str, Any]) -> dict[str, Any]:
        self.f.write(json.dumps(rec) + "\n")
        self.f.flush()
        return rec

    def validation(self, step: int, kind: str, metrics: dict[str, float]) -> None:
        if not metrics:
            return
        self.last_val = metrics
        self.write({"kind": kind, "step": step, **{k: round(v, 6) for k, v in metrics.items()}})
        log.info("step %d %s %s", step, kind, {k: round(v, 4) for k, v in metrics.items() if k in _LOGGED_VAL})


def _summary(cfg: TrainConfig, model: TinyVLA, data: RunData, final_val: dict[str, float], curve: list[dict],
             seconds: float, command: str | None) -> dict[str, Any]:
    """training.json: the command, config, model, data, final figures and a curve of at most ~200 train records."""
    train_recs = [r for r in curve if r["kind"] == "train"]
    stride = max(1, len(train_recs) // 200)
    return {
        "command": command or f"dtp.tinyvla.train.train({cfg!r})",
        "config": cfg.to_json(),
        "model": asdict(model.config),
        "parameters": sum(p.numel() for p in model.parameters()),
        "data": _data_summary(data, model.config.num_image_tokens),
        "seconds": round(seconds, 1),
        "final_train": train_recs[-1] if train_recs else {},
        "final_val": {k: round(v, 6) for k, v in final_val.items()},
        "curve": {"train": train_recs[::stride] + ([train_recs[-1]] if train_recs and (len(train_recs) - 1) % stride else []),
                  "val": [r for r in curve if r["kind"] == "val"]},
        "torch": torch.__version__,
        "threads": cfg.threads,
    }


def _data_summary(data: RunData, n_image: int) -> dict[str, Any]:
    """What the run trained and validated on: tasks, episode and step counts, val seeds, grounding frames."""
    info: dict[str, Any] = {"tasks": list(data.tasks)}
    if data.train_set is not None:
        val_eps = data.val_episodes
        info.update(train_episodes=data.train_set.n_episodes, train_steps=len(data.train_set), val_episodes=len(val_eps),
                    val_steps=len(data.val_set) if data.val_set else 0,
                    val_seeds={t: sorted(e.seed for e in val_eps if e.task == t) for t in data.tasks})
    g_train, g_val = data.g_train, data.g_val
    if g_train is not None:
        info["grounding"] = {"train_frames": g_train.n_frames, "train_questions": len(g_train),
                             "val_frames": g_val.n_frames if g_val else 0, "val_questions": len(g_val) if g_val else 0}
        if g_val is not None:
            info["grounding"]["majority_baseline"] = {k: round(v, 6) for k, v in grounding_baselines(g_train, g_val).items()}
            info["grounding"]["uniform_chance_point"] = 1 / n_image
    return info
