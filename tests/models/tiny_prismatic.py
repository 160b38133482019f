"""A tiny stand-in for OpenVLA's Prismatic layout (vision_backbone, projector, language_model).

Self-contained (no dtp, no test imports) so that the loader test can copy this file into a
checkpoint directory as its "remote code" `modeling_prismatic.py`, the way an OpenVLA
checkpoint ships `modeling_prismatic.py`. The real one uses timm DINOv2 + SigLIP towers;
here one strided conv stands in for them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import BatchFeature, LlamaConfig, LlamaForCausalLM, PretrainedConfig, PreTrainedModel, PreTrainedTokenizerFast


class TinyPrismaticConfig(PretrainedConfig):
    model_type = "openvla"
    sub_configs = {"text_config": LlamaConfig}

    def __init__(self, text_config=None, image_size=32, patch_size=8, vision_width=24, pad_to_multiple_of=64,
                 n_action_bins=256, norm_stats=None, **kwargs):
        if isinstance(text_config, dict) or text_config is None:
            text_config = LlamaConfig(**(text_config or {}))
        self.text_config = text_config
        self.image_size = image_size
        self.patch_size = patch_size
        self.vision_width = vision_width
        self.pad_to_multiple_of = pad_to_multiple_of
        self.n_action_bins = n_action_bins
        self.norm_stats = norm_stats
        super().__init__(**kwargs)


class TinyVisionBackbone(nn.Module):
    """(B, 3, H, W) -> (B, N, D_vis) patch features, like PrismaticVisionBackbone."""

    def __init__(self, cfg: TinyPrismaticConfig):
        super().__init__()
        self.patchify = nn.Conv2d(3, cfg.vision_width, cfg.patch_size, stride=cfg.patch_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.patchify(pixel_values).flatten(2).transpose(1, 2)


class TinyProjector(nn.Module):
    """Prismatic's MLP projector (fc1 -> GELU -> fc2)."""

    def __init__(self, vision_width: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(vision_width, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class TinyPrismatic(PreTrainedModel):
    config_class = TinyPrismaticConfig
    base_model_prefix = "tiny_prismatic"
    _supports_sdpa = True

    def __init__(self, config: TinyPrismaticConfig):
        super().__init__(config)
        self.vision_backbone = TinyVisionBackbone(config)
        self.projector = TinyProjector(config.vision_width, config.text_config.hidden_size)
        self.language_model = LlamaForCausalLM(config.text_config)
        self.post_init()


class TinyPrismaticProcessor:
    """Stand-in for PrismaticProcessor: `processor(text, image)` -> input_ids (BOS first), attention_mask, pixel_values."""

    def __init__(self, tokenizer: PreTrainedTokenizerFast, image_size: int = 32):
        self.tokenizer = tokenizer
        self.image_size = image_size

    def __call__(self, text, images, return_tensors="pt") -> BatchFeature:
        ids = [self.tokenizer.bos_token_id] + self.tokenizer.encode(text, add_special_tokens=False)
        img = images.convert("RGB").resize((self.image_size, self.image_size))
        pixels = torch.from_numpy(np.asarray(img, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1).unsqueeze(0)
        return BatchFeature(
            {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long), "pixel_values": pixels}
        )

    def save_pretrained(self, directory) -> None:
        d = Path(directory)
        self.tokenizer.save_pretrained(d)
        (d / "processor_config.json").write_text(
            json.dumps({"processor_class": "TinyPrismaticProcessor", "image_size": self.image_size,
                        "auto_map": {"AutoProcessor": "modeling_prismatic.TinyPrismaticProcessor"}})
        )

    @classmethod
    def register_for_auto_class(cls, auto_class="AutoProcessor") -> None:  # what AutoProcessor asks of remote classes
        return None

    @classmethod
    def from_pretrained(cls, directory, **kwargs) -> "TinyPrismaticProcessor":
        d = Path(directory)
        cfg = json.loads((d / "processor_config.json").read_text())
        return cls(PreTrainedTokenizerFast.from_pretrained(str(d)), image_size=cfg["image_size"])
