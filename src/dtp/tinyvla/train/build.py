"""The model, the patch-word head and the optimizer of a run, each checked against the run's data
(ConfigError) before anything is written."""

from __future__ import annotations

import torch

from ...actions import ActionBinner
from ...errors import ConfigError
from ..data import DataError, demo_variant
from ..modeling import VARIANT_KEY, TinyVLA, TinyVLAConfig
from .config import TrainConfig
from .datasets import RunData

__all__ = ["build_model", "proprio_statistics", "patch_word_head", "check_instruction_attention", "val_patch_word_labels",
           "build_optimizer"]

_REGENERATE = "(regenerate with dtp grounding-data)"


def build_model(cfg: TrainConfig, data: RunData) -> TinyVLA:
    """A fresh model of cfg's sizes (seeded with cfg.seed), or a copy of init_from's."""
    tokenizer, train_set, g_train = data.tokenizer, data.train_set, data.g_train
    num_words = max(TinyVLAConfig.num_words, tokenizer.get_vocab_size())
    torch.manual_seed(cfg.seed)
    if cfg.init_from:
        init = TinyVLA.from_pretrained(cfg.init_from)
        model = TinyVLA(init.config)
        model.load_state_dict(init.state_dict())
        del init
    elif train_set is not None:  # the demos fix the action and proprio sizes (4 and 4 on Meta-World, 7 and 8 on LIBERO)
        model_cfg = cfg.model_config(num_words, train_set.action_bins.shape[1], train_set.proprio.shape[1])
        if cfg.normalize_proprio:
            model_cfg.proprio_mean, model_cfg.proprio_std = proprio_statistics(train_set.proprio)
        model = TinyVLA(model_cfg)
    else:
        model = TinyVLA(cfg.model_config(num_words))
    if cfg.stage == "actions":  # dtp demo runs a checkpoint on the variant its demos came from
        model.config.extra[VARIANT_KEY] = demo_variant(cfg.data_dir)
    if tokenizer.get_vocab_size() > model.config.num_words:
        raise ConfigError(f"the tokenizer has {tokenizer.get_vocab_size()} words, the model's vocabulary "
                          f"{model.config.num_words}")
    if train_set is not None and (model.config.action_bins != ActionBinner().bins
                                  or model.config.action_dims != train_set.action_bins.shape[1]
                                  or model.config.proprio_dims != train_set.proprio.shape[1]):
        raise ConfigError(f"the demos have {train_set.action_bins.shape[1]}-D actions and {train_set.proprio.shape[1]}-D "
                          f"proprio, the model {model.config.action_dims}-D with {model.config.action_bins} bins and "
                          f"{model.config.proprio_dims}-D proprio")
    if g_train is not None and g_train.images.shape[1] != model.config.image_size:
        raise ConfigError(f"grounding frames are {g_train.images.shape[1]} px, the model reads {model.config.image_size}")
    return model


def proprio_statistics(proprio: torch.Tensor, floor: float = 0.01) -> tuple[list[float], list[float]]:
    """(M, P) training proprio -> per-dimension mean and std (floored: a constant dimension stays quiet)."""
    mean, std = proprio.double().mean(0), proprio.double().std(0).clamp_min(floor)
    return [round(float(v), 6) for v in mean], [round(float(v), 6) for v in std]


def patch_word_head(cfg: TrainConfig, model: TinyVLA, data: RunData) -> torch.nn.Linear | None:
    """The patch-word head (seeded with cfg.seed + 1) when the vision stage or patch_word_weight asks for
    it: a training aid over the projected image tokens, saved with the checkpoints, not part of the model."""
    if not (cfg.patch_word_weight > 0 or cfg.stage == "vision"):
        return None
    if data.g_train.patch_words is None:
        raise ConfigError(f"the vision stage and patch_word_weight need frames with patch_words labels; "
                          f"{cfg.grounding_dir}/train was written without them {_REGENERATE}")
    torch.manual_seed(cfg.seed + 1)
    return torch.nn.Linear(model.config.hidden_size, len(data.g_train.patch_word_names))


def check_instruction_attention(cfg: TrainConfig, model: TinyVLA, data: RunData) -> None:
    """instruction_attention_weight needs frames with instruction targets and layers the model has."""
    if cfg.instruction_attention_weight <= 0:
        return
    if data.g_train.instruction_ids is None:
        raise ConfigError(f"instruction_attention_weight needs frames with instruction targets; "
                          f"{cfg.grounding_dir}/train was written without them {_REGENERATE}")
    bad_layers = [l for l in cfg.instruction_attention_layers if l >= model.config.num_layers]
    if bad_layers:
        raise ConfigError(f"instruction_attention_layers {bad_layers} are out of range for a "
                          f"{model.config.num_layers}-layer model")


def val_patch_word_labels(head: torch.nn.Linear | None, data: RunData) -> torch.Tensor | None:
    """(F, W, N) bool: the val frames' patch-word labels over the head's W words (the train frames'),
    or None when there is no head or no labelled val frames."""
    g_val = data.g_val
    if head is None or g_val is None or g_val.patch_words is None:
        return None
    try:
        return g_val.patch_words_over(data.g_train.patch_word_names)
    except DataError as e:
        raise ConfigError(f"grounding val frames: {e}") from e


def build_optimizer(cfg: TrainConfig, model: TinyVLA, head: torch.nn.Linear | None
                    ) -> tuple[torch.optim.AdamW, list[torch.nn.Parameter]]:
    """AdamW over the model (and head): matrices and embeddings decay, norms and biases don't.
    Returns (optimizer, the parameters it trains, for gradient clipping)."""
    decay, no_decay = [], []
    for p in model.parameters():
        (decay if p.dim() >= 2 else no_decay).append(p)
    if head is not None:
        decay.append(head.weight)
        no_decay.append(head.bias)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8, fused=True)
    return opt, [p for group in groups for p in group["params"]]
