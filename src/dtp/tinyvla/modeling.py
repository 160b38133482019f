"""TinyVLA: OpenVLA's structure in miniature, readable top to bottom.

image (B, 3, H, W) -> conv patch encoder -> (B, N, D_vis) -> projector -> (B, N, D) ->
a small Llama (transformers) over [BOS, image tokens, registers, instruction words, proprio token]
-> 256-bin action tokens, one per action dimension, generated greedily.

Registers (``num_registers`` > 0, default 0) are learned tokens placed right after the image
tokens, as in "Vision Transformers Need Registers": they read the whole image and give the
model somewhere other than a background patch to keep global information. They are not
image tokens: never pruned, never scored.

Saved as config.json + model.safetensors (+ tokenizer.json beside them); never pickled.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import LlamaForCausalLM

from ..errors import CheckpointError, ConfigError
from ..shipped import VARIANT_KEY  # in config.extra: the benchmark variant of the demos it was trained on
from .configuration import MODEL_TYPE, TinyVLAConfig

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
DEFAULT_LAYERS_KEY = "dtp_relevance_layers"  # in config.extra: relevance layers chosen by `dtp layers`


class PatchEncoder(nn.Module):
    """A small conv stem then a strided patchify conv: (B, 3, H, W) -> (B, N, D_vis), plus 2-D positions."""

    def __init__(self, cfg: TinyVLAConfig):
        super().__init__()
        if cfg.patch_size % 2:
            raise ConfigError("patch_size must be even (the stem halves the resolution)")
        self.stem = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1),
            nn.GELU(),
        )
        half = cfg.patch_size // 2
        self.patchify = nn.Conv2d(64, cfg.vision_width, half, stride=half)
        self.pos = nn.Parameter(torch.zeros(1, cfg.num_image_tokens, cfg.vision_width))
        nn.init.normal_(self.pos, std=0.02)
        self.norm = nn.LayerNorm(cfg.vision_width)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.patchify(self.stem(pixels))  # (B, D_vis, h, w)
        x = x.flatten(2).transpose(1, 2)  # (B, N, D_vis), row-major over the grid
        return self.norm(x + self.pos)


class TinyVLA(nn.Module):
    """Patch encoder -> projector -> Llama. `language_model` is a stock LlamaForCausalLM."""

    def __init__(self, cfg: TinyVLAConfig):
        super().__init__()
        self.config = cfg
        self.vision = PatchEncoder(cfg)
        self.projector = nn.Sequential(
            nn.Linear(cfg.vision_width, cfg.hidden_size), nn.GELU(), nn.Linear(cfg.hidden_size, cfg.hidden_size)
        )
        self.proprio_proj = nn.Linear(cfg.proprio_dims, cfg.hidden_size)
        if (cfg.proprio_mean is None) != (cfg.proprio_std is None):
            raise ConfigError("proprio_mean and proprio_std come together (both or neither)")
        if cfg.proprio_mean is not None:  # from the config, not the weights: non-persistent buffers
            mean, std = torch.tensor(cfg.proprio_mean), torch.tensor(cfg.proprio_std)
            if mean.shape != (cfg.proprio_dims,) or std.shape != (cfg.proprio_dims,) or not bool((std > 0).all()):
                raise ConfigError(f"proprio_mean/proprio_std must hold {cfg.proprio_dims} values (std > 0)")
            self.register_buffer("proprio_mean", mean, persistent=False)
            self.register_buffer("proprio_std", std, persistent=False)
        if cfg.num_registers < 0:
            raise ConfigError(f"num_registers must be >= 0, got {cfg.num_registers}")
        if cfg.num_registers:  # no parameter at 0, so checkpoints without registers load unchanged
            self.registers = nn.Parameter(torch.randn(1, cfg.num_registers, cfg.hidden_size) * 0.02)
        self.language_model = LlamaForCausalLM(cfg.llama_config())

    # -- pieces the adapter composes ----------------------------------------------------
    def image_embeddings(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) float in [0, 1] -> (B, N, D) projected patch embeddings."""
        return self.projector(self.vision((pixels - 0.5) / 0.25))

    def word_embeddings(self, ids: torch.Tensor) -> torch.Tensor:
        return self.language_model.get_input_embeddings()(ids)

    def proprio_embedding(self, proprio: torch.Tensor) -> torch.Tensor:
        """(B, P) -> (B, 1, D), standardised first when the config carries the training data's statistics."""
        if self.config.proprio_mean is not None:
            proprio = (proprio - self.proprio_mean.to(proprio.dtype)) / self.proprio_std.to(proprio.dtype)
        return self.proprio_proj(proprio).unsqueeze(1)

    def sequence_embeddings(
        self,
        pixels: torch.Tensor,
        ids: torch.Tensor,
        proprio: torch.Tensor,
        *,
        word_lengths: torch.Tensor | None = None,
        action_ids: torch.Tensor | None = None,
        image_embeddings: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The input sequence [BOS][image x N][registers x R][words x P][proprio][action tokens] as embeddings.

        The one place the layout is built: the adapter's prefill (inference) and the trainer
        (teacher forcing) both call this. pixels (B, 3, H, W) in [0, 1]; ids (B, 1 + P_max):
        BOS then word ids; proprio (B, P_dims); action_ids (B, T) vocabulary ids appended after
        the proprio token. With word_lengths (B,) the rows of `ids` are right-padded word lists
        of those lengths: each row's proprio and action tokens then follow its own last word and
        the padding moves to the end of the row, so every real token sits at the position it
        has at inference. image_embeddings (B, N, D), when given, stand for image_embeddings(pixels)
        (a trainer that reads one image several ways encodes it once). Returns (B, S, D) with
        S = 1 + N + R + P_max + 1 + T.
        """
        word = self.word_embeddings(ids)  # (B, 1 + P_max, D)
        img = self.image_embeddings(pixels) if image_embeddings is None else image_embeddings  # (B, N, D)
        prop = self.proprio_embedding(proprio)  # (B, 1, D)
        parts = [word[:, :1], img]
        if self.config.num_registers:
            parts.append(self.registers.expand(img.shape[0], -1, -1).to(img.dtype))  # (B, R, D)
        parts += [word[:, 1:], prop]
        if action_ids is not None:
            parts.append(self.word_embeddings(action_ids))  # (B, T, D)
        seq = torch.cat(parts, dim=1)  # (B, S, D)
        if word_lengths is None:
            return seq
        b, s, d = seq.shape
        lengths = word_lengths.view(b, 1).to(seq.device)
        tail = self.config.text_start + lengths  # (B, 1): where each row's proprio goes
        j = torch.arange(s, device=seq.device).view(1, s)
        src = torch.where(j < tail, j, j + (ids.shape[1] - 1 - lengths))  # skip the row's word padding
        src = torch.where(src < s, src, tail)  # the row's trailing slots read a PAD word embedding
        return seq.gather(1, src.unsqueeze(-1).expand(b, s, d))

    def action_token_ids(self) -> torch.Tensor:
        """Vocabulary ids of the 256 action bins (the last ids, as in OpenVLA)."""
        return torch.arange(self.config.num_words, self.config.vocab_size)

    # -- saving and loading -------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> None:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        (d / CONFIG_NAME).write_text(json.dumps(asdict(self.config), indent=2))
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(d / WEIGHTS_NAME), metadata={"format": "pt", "model_type": MODEL_TYPE})

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "TinyVLA":
        d = Path(directory)
        cfg_path, w_path = d / CONFIG_NAME, d / WEIGHTS_NAME
        if not cfg_path.is_file() or not w_path.is_file():
            raise CheckpointError(
                f"{d} is not a TinyVLA checkpoint: expected {CONFIG_NAME} and {WEIGHTS_NAME} there "
                "(train one with `dtp train` or omit the path to use the shipped model)"
            )
        try:
            raw = json.loads(cfg_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{cfg_path} is not valid JSON: {e}") from e
        if raw.get("model_type") != MODEL_TYPE:
            raise CheckpointError(
                f"{d} holds a {raw.get('model_type')!r} checkpoint, not {MODEL_TYPE!r}; "
                "load public models with dtp.models.load / wrap_model instead"
            )
        known = set(TinyVLAConfig.__dataclass_fields__)
        cfg = TinyVLAConfig(**{k: v for k, v in raw.items() if k in known})
        model = cls(cfg)
        try:
            state = load_file(str(w_path))
        except Exception as e:  # safetensors raises its own error types for corrupt headers
            raise CheckpointError(f"{w_path} is corrupt or not a safetensors file: {e}") from e
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise CheckpointError(
                f"{w_path} does not match the TinyVLA architecture in its config "
                f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})"
            )
        model.eval()
        return model


def write_default_relevance_layers(directory: str | Path, layers: tuple[int, ...]) -> Path:
    """Store `layers` as this checkpoint's default relevance layers (config.json only; weights untouched)."""
    d = Path(directory)
    cfg_path = d / CONFIG_NAME
    model = TinyVLA.from_pretrained(d)  # validates the checkpoint before anything is written
    n = model.config.num_layers
    if not layers or any(not 0 <= int(l) < n for l in layers):
        raise CheckpointError(f"relevance layers {list(layers)} are out of range for a {n}-layer TinyVLA")
    raw = json.loads(cfg_path.read_text())
    raw.setdefault("extra", {})[DEFAULT_LAYERS_KEY] = sorted(int(l) for l in layers)
    cfg_path.write_text(json.dumps(raw, indent=2))
    return cfg_path
