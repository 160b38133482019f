"""A run's files: checkpoints (model, tokenizer, AdamW state as safetensors, never pickled; the
patch-word head), the training log, the final folder, and where a run left off."""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ...errors import CheckpointError
from ..modeling import TinyVLA
from ..tokenizer import save_tokenizer

__all__ = ["CHECKPOINTS", "FINAL", "LOG_NAME", "STATE_NAME", "OPTIM_NAME", "SUMMARY_NAME", "HEAD_NAME",
           "save_checkpoint", "restore", "load_optimizer", "checkpoints", "read_log", "saved_step",
           "start_run_files", "save_final"]

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
FINAL = "final"
LOG_NAME = "train_log.jsonl"
STATE_NAME = "trainer_state.json"
OPTIM_NAME = "optimizer.safetensors"
SUMMARY_NAME = "training.json"
HEAD_NAME = "patch_word_head.safetensors"


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    sd = opt.state_dict()
    tensors = {
        f"state.{pid}.{name}": (v if torch.is_tensor(v) else torch.tensor(v)).detach().contiguous()
        for pid, st in sd["state"].items()
        for name, v in st.items()
    }
    return tensors, {"param_groups": json.dumps(sd["param_groups"])}


def load_optimizer(opt: torch.optim.Optimizer, path: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        groups = json.loads(f.metadata()["param_groups"])
    tensors = load_file(str(path))
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in tensors.items():
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": groups})


def save_checkpoint(root: Path, model: TinyVLA, tokenizer, opt, state: dict[str, Any], keep: int,
                     head: torch.nn.Module | None = None) -> Path:
    ckdir = root / CHECKPOINTS
    final = ckdir / f"step_{state['step']:07d}"
    tmp = ckdir / f".tmp_step_{state['step']:07d}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    save_tokenizer(tokenizer, tmp)
    tensors, meta = optimizer_tensors(opt)
    save_file(tensors, str(tmp / OPTIM_NAME), metadata=meta)
    if head is not None:
        save_file({k: v.detach().contiguous() for k, v in head.state_dict().items()}, str(tmp / HEAD_NAME))
    (tmp / STATE_NAME).write_text(json.dumps(state, indent=2))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)  # a checkpoint directory exists only once it is complete
    for old in checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def restore(resume_from: Path, model: TinyVLA, head: torch.nn.Module | None, opt: torch.optim.Optimizer
            ) -> tuple[int, float]:
    """Load a checkpoint's weights, head and AdamW state into the run's; returns (step, seconds) it had
    reached. CheckpointError when it was saved by a run of other sizes or other frames."""
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
    log.info("resuming from %s (step %d)", resume_from, int(st["step"]))
    return int(st["step"]), float(st["seconds"])


def checkpoints(root: Path) -> list[Path]:
    ckdir = root / CHECKPOINTS
    if not ckdir.is_dir():
        return []
    return sorted(p for p in ckdir.glob("step_*") if (p / STATE_NAME).is_file())


def read_log(path: Path, upto_step: int) -> list[dict]:
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


def saved_step(out_dir: str | Path) -> int:
    """Step of the last complete checkpoint in out_dir (0 when there is none)."""
    ck = checkpoints(Path(out_dir))
    return int(json.loads((ck[-1] / STATE_NAME).read_text())["step"]) if ck else 0


def start_run_files(out: Path, config: dict[str, Any], start_step: int) -> Path:
    """Create out (the first write of a run), write train_config.json, and cut the log back to the
    records up to start_step (a crashed run may have logged past its last checkpoint); returns the log's path."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_config.json").write_text(json.dumps(config, indent=2))
    log_path = out / LOG_NAME
    records = read_log(log_path, start_step)
    with log_path.open("w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    return log_path


def save_final(out: Path, model: TinyVLA, tokenizer, summary: dict[str, Any]) -> Path:
    """out/final: the shipped files (config.json, model.safetensors, tokenizer.json) and training.json."""
    final = out / FINAL
    model.save_pretrained(final)
    save_tokenizer(tokenizer, final)
    (final / SUMMARY_NAME).write_text(json.dumps(summary, indent=1))
    return final
