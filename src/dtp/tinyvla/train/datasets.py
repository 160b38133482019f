"""What a run reads, all in memory: the tokenizer, the demonstrations (actions stage), the grounding
frames, and the fixed validation subsets the periodic evaluations use."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tokenizers import Tokenizer

from ...actions import ActionBinner
from ...errors import ConfigError
from ..data import DemoSet, Episode, build_tokenizer, load_episodes, make_demo_set, split_episodes
from ..grounding_data import GroundingSet, grounded_tokenizer, load_grounding
from ..tokenizer import load_tokenizer
from .config import TrainConfig

__all__ = ["RunData", "load_run_data"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunData:
    """The demos are absent outside the actions stage, the grounding frames when no grounding_dir is given."""

    tokenizer: Tokenizer
    train_set: DemoSet | None = None
    val_set: DemoSet | None = None
    tasks: tuple[str, ...] = ()
    val_episodes: list[Episode] = field(default_factory=list)
    g_train: GroundingSet | None = None
    g_val: GroundingSet | None = None
    val_index: torch.Tensor | None = None  # (eval_samples,) the val steps of a periodic evaluation
    g_val_subset: GroundingSet | None = None  # the val questions of a periodic evaluation


def load_run_data(cfg: TrainConfig, resume_from: Path | None) -> RunData:
    """Demos, grounding frames, tokenizer and validation subsets (ConfigError/DataError on bad input)."""
    t0 = time.perf_counter()
    episodes = None
    if cfg.stage == "actions":
        episodes = load_episodes(cfg.data_dir, cfg.image_size, tasks=cfg.tasks, only_success=cfg.only_success)
    tokenizer = _tokenizer(cfg, episodes, resume_from)
    demos = {}
    if episodes is not None:
        tasks = tuple(sorted({ep.task for ep in episodes}))
        train_eps, val_eps = split_episodes(episodes, cfg.val_fraction, cfg.seed)
        binner = ActionBinner()
        train_set = make_demo_set(train_eps, tokenizer, binner, tasks)
        val_set = make_demo_set(val_eps, tokenizer, binner, tasks) if val_eps else None
        demos = dict(train_set=train_set, val_set=val_set, tasks=tasks, val_episodes=val_eps,
                     val_index=_val_index(cfg, val_set))
        log.info("loaded %d train episodes (%d steps), %d val episodes (%d steps) of %s in %.1fs",
                 train_set.n_episodes, len(train_set), len(val_eps), len(val_set) if val_set else 0, tasks,
                 time.perf_counter() - t0)
    grounding = {}
    if cfg.grounding_dir:
        root = Path(cfg.grounding_dir)
        g_train = load_grounding(root / "train", tokenizer, cfg.image_size)
        g_val = load_grounding(root / "val", tokenizer, cfg.image_size) if (root / "val").is_dir() else None
        grounding = dict(g_train=g_train, g_val=g_val, g_val_subset=_grounding_subset(cfg, g_val))
        log.info("loaded %d grounding questions on %d frames (val: %d on %d)", len(g_train), g_train.n_frames,
                 len(g_val) if g_val else 0, g_val.n_frames if g_val else 0)
    return RunData(tokenizer=tokenizer, **demos, **grounding)


def _tokenizer(cfg: TrainConfig, episodes: list[Episode] | None, resume_from: Path | None) -> Tokenizer:
    """The tokenizer of the checkpoint being resumed or initialised from; otherwise one built over the
    instruction words, plus every grounding word when grounding data is used."""
    source = resume_from or (Path(cfg.init_from) if cfg.init_from else None)
    if source is not None:
        tokenizer = load_tokenizer(source)
        if episodes is not None:
            vocab = tokenizer.get_vocab()
            unknown = sorted({w for ep in episodes for w in ep.instruction.lower().split()} - set(vocab))
            if unknown:
                raise ConfigError(f"the demos' instructions use words the tokenizer of {source} lacks: {unknown[:10]}")
        return tokenizer
    if cfg.grounding_dir:
        words = [w for ep in episodes or () for w in ep.instruction.lower().split()]
        n = cfg.image_size // cfg.patch_size
        return grounded_tokenizer((n, n), words)
    return build_tokenizer(episodes)


def _val_index(cfg: TrainConfig, val_set: DemoSet | None) -> torch.Tensor | None:
    """The periodic evaluation's val steps: all, or eval_samples of them drawn once with seed + 99."""
    if val_set is None:
        return None
    if cfg.eval_samples and len(val_set) > cfg.eval_samples:
        g = torch.Generator().manual_seed(cfg.seed + 99)
        return torch.randperm(len(val_set), generator=g)[: cfg.eval_samples].sort().values
    return torch.arange(len(val_set))


def _grounding_subset(cfg: TrainConfig, g_val: GroundingSet | None) -> GroundingSet | None:
    """The periodic evaluation's val questions (the final one asks all): all, or eval_samples of them
    drawn once with seed + 98."""
    if g_val is None or not (cfg.eval_samples and len(g_val) > cfg.eval_samples):
        return g_val
    g = torch.Generator().manual_seed(cfg.seed + 98)
    sel = torch.randperm(len(g_val), generator=g)[: cfg.eval_samples].sort().values
    return GroundingSet(images=g_val.images, proprio=g_val.proprio, frame=g_val.frame[sel], ids=g_val.ids[sel],
                        word_lengths=g_val.word_lengths[sel], answers=g_val.answers[sel], kind_ids=g_val.kind_ids[sel],
                        answer_words=[g_val.answer_words[i] for i in sel.tolist()], n_frames=g_val.n_frames)
