"""pi0 models for `dtp bench`: named pi0 shapes, built with random weights from a PI0Config.

A shape gives the three parts of pi0: the PaliGemma prefix (SigLIP vision tower + Gemma language
model), the Gemma action expert, and the flow-matching head (chunk, denoising steps). "pi0" is the
published size (PI0Config's defaults: PaliGemma 2B = SigLIP So400m/14 at 224 px, 27 layers x 1152,
+ Gemma 2B, 18 layers x 2048, 8 heads, 1 key/value head of 256; Gemma 300M action expert, 18 layers
x 1024; 256 image tokens per 224 px image, chunk 50, 10 denoising steps). The bench prompt is 20
words. The other shapes keep pi0's widths with fewer layers (and a vocabulary cut to the bench
tokenizer's, which changes memory, not the work of a step: pi0 has no language-model head), or are
test-sized.

The prompt tokenizer is a word-level one over the bench instruction (no hub download); the image
processor is SigLIP's PIL one; state and action statistics are identity (mean 0, std 1).
Each shape name is a bench builder (`register_builder`), so `dtp bench --model-config pi0-2L` works; a JSON
file {"base": "pi0", "vlm_layers": 4} overrides a named shape's fields (`register_json_base`).
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError
from ..models.base import Observation
from .models import TWENTY_WORDS, BenchModel, register_builder, register_json_base
from .shapes import not_positive_ints

__all__ = ["Pi0Shape", "PI0_SHAPES", "pi0_shape_from_json", "pi0_config", "pi0_processor", "build_pi0",
           "pi0_observation", "STATE_DIM"]

STATE_DIM = 7  # a 7-dof arm's state; pi0 pads it to max_state_dim
PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"


@dataclass(frozen=True)
class Pi0Shape:
    """Sizes of a bench pi0. vocab_size None: the bench tokenizer's size (smallest embedding)."""

    name: str
    vlm_layers: int = 18
    vlm_width: int = 2048
    vlm_mlp: int = 16384
    heads: int = 8  # prefix and expert share heads, key/value heads and head_dim (the expert reads the prefix cache)
    kv_heads: int = 1
    head_dim: int = 256
    vocab_size: int | None = 257152
    vision_layers: int = 27
    vision_width: int = 1152
    vision_mlp: int = 4304
    vision_heads: int = 16
    image_size: int = 224
    patch_size: int = 14
    expert_layers: int = 18
    expert_width: int = 1024
    expert_mlp: int = 4096
    chunk: int = 50
    steps: int = 10
    max_action_dim: int = 32
    max_state_dim: int = 32
    note: str = ""

    def __post_init__(self) -> None:
        sizes = {k: v for k, v in asdict(self).items() if k not in ("name", "note")}
        if self.vocab_size is None:
            del sizes["vocab_size"]
        bad = not_positive_ints(sizes)
        if bad:
            raise ConfigError(f"pi0 shape {self.name!r}: sizes must be positive integers, got {bad}")
        if self.image_size % self.patch_size:
            raise ConfigError(f"pi0 shape {self.name!r}: image_size {self.image_size} is not a multiple of patch_size")
        if self.heads % self.kv_heads or self.vision_width % self.vision_heads or self.expert_width % 2:
            raise ConfigError(f"pi0 shape {self.name!r}: heads / key-value heads / widths do not divide")
        if self.vlm_layers != self.expert_layers:
            raise ConfigError(f"pi0 shape {self.name!r}: the expert's layer i reads the prefix cache of layer i, so "
                              f"vlm_layers ({self.vlm_layers}) must equal expert_layers ({self.expert_layers})")
        if STATE_DIM > self.max_state_dim or STATE_DIM > self.max_action_dim:
            raise ConfigError(f"pi0 shape {self.name!r}: max_state_dim and max_action_dim must be >= {STATE_DIM}")

    @property
    def image_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def parameters(self) -> dict[str, int]:
        """Parameters of the language model (with its token embeddings), the expert's layers and final norm (its own
        token embeddings, unused by pi0, left out) and the vision tower with the projector."""
        d, e, q, kv = self.vlm_width, self.expert_width, self.heads * self.head_dim, self.kv_heads * self.head_dim
        lm_layer = d * q * 2 + d * kv * 2 + 3 * d * self.vlm_mlp + 2 * d
        ex_layer = e * q * 2 + e * kv * 2 + 3 * e * self.expert_mlp + 2 * e
        v = self.vision_width
        vis_layer = 4 * v * v + 2 * v * self.vision_mlp + 9 * v + self.vision_mlp
        vocab = self.vocab_size or 0
        return {
            "language_model": vocab * d + self.vlm_layers * lm_layer + d,
            "action_expert": self.expert_layers * ex_layer + e,
            "vision_tower": self.vision_layers * vis_layer + 3 * self.patch_size**2 * v + v + self.image_tokens * v
            + 2 * v + v * d + d,  # + patch stem, positions, final norm, projector
        }


PI0_SHAPES: dict[str, Pi0Shape] = {
    s.name: s
    for s in (
        Pi0Shape("pi0", note="pi0's published sizes (PI0Config defaults): PaliGemma 2B + Gemma 300M action expert"),
        Pi0Shape("pi0-2L", vlm_layers=2, expert_layers=2, vision_layers=2, vocab_size=None,
                 note="pi0's widths, 2 layers in each of vision tower, language model and expert (CPU-sized)"),
        Pi0Shape("pi0-tiny", vlm_layers=2, vlm_width=64, vlm_mlp=128, heads=4, head_dim=16, vocab_size=None,
                 vision_layers=1, vision_width=32, vision_mlp=64, vision_heads=2, image_size=32, patch_size=8,
                 expert_layers=2, expert_width=32, expert_mlp=64, chunk=5, steps=3, max_action_dim=8,
                 max_state_dim=8, note="test-sized"),
    )
}


def _word_tokenizer(words: list[str]):
    """A word-level PreTrainedTokenizerFast over `words` (the prompt), with Gemma's special tokens."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab: dict[str, int] = {}
    for t in (PAD, BOS, EOS, UNK, *words):
        vocab.setdefault(t.lower(), len(vocab))
    tk = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tk.normalizer = normalizers.Lowercase()
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token=PAD, bos_token=BOS, eos_token=EOS, unk_token=UNK)


def pi0_processor(shape: Pi0Shape, words: list[str]):
    """PI0Processor for `shape`: SigLIP's PIL image processor, the word tokenizer, identity statistics."""
    from transformers import PI0Processor
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    ip = SiglipImageProcessorPil(size={"height": shape.image_size, "width": shape.image_size})
    ip.image_seq_length = shape.image_tokens
    zeros, ones = [0.0] * STATE_DIM, [1.0] * STATE_DIM
    proc = PI0Processor(image_processor=ip, tokenizer=_word_tokenizer(words), max_state_dim=shape.max_state_dim,
                        chunk_size=shape.chunk, state_mean=zeros, state_std=ones, actions_mean=zeros, actions_std=ones)
    return proc


def pi0_config(shape: Pi0Shape, vocab_size: int, image_token_id: int):
    """The PI0Config of `shape` (SDPA attention)."""
    from transformers import PI0Config

    cfg = PI0Config(
        vlm_config=dict(
            model_type="paligemma",
            text_config=dict(
                model_type="gemma", vocab_size=vocab_size, hidden_size=shape.vlm_width, intermediate_size=shape.vlm_mlp,
                num_hidden_layers=shape.vlm_layers, num_attention_heads=shape.heads, num_key_value_heads=shape.kv_heads,
                head_dim=shape.head_dim,
            ),
            vision_config=dict(
                model_type="siglip_vision_model", image_size=shape.image_size, patch_size=shape.patch_size,
                hidden_size=shape.vision_width, intermediate_size=shape.vision_mlp, num_hidden_layers=shape.vision_layers,
                num_attention_heads=shape.vision_heads, vision_use_head=False,
            ),
            projection_dim=shape.vlm_width,
            image_token_id=image_token_id,
        ),
        dit_config=dict(
            model_type="gemma", hidden_size=shape.expert_width, intermediate_size=shape.expert_mlp,
            num_hidden_layers=shape.expert_layers, num_attention_heads=shape.heads, num_key_value_heads=shape.kv_heads,
            head_dim=shape.head_dim,
        ),
        chunk_size=shape.chunk,
        max_state_dim=shape.max_state_dim,
        max_action_dim=shape.max_action_dim,
        num_inference_steps=shape.steps,
    )
    cfg._attn_implementation = "sdpa"
    return cfg


def build_pi0(shape: Pi0Shape, seed: int = 0, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
    """(PI0Adapter with random weights of `shape`, the instruction it is given)."""
    from transformers import PI0ForConditionalGeneration

    from ..models.pi0 import PI0Adapter

    words = TWENTY_WORDS
    proc = pi0_processor(shape, words)
    vocab = max(shape.vocab_size or 0, len(proc.tokenizer))
    cfg = pi0_config(shape, vocab, proc.image_token_id)
    device = torch.device(device)
    torch.manual_seed(seed)
    if device.type == "cuda":  # build there: the 3.5 B pi0 need not be held on the host in float32
        with torch.device(device):
            model = PI0ForConditionalGeneration(copy.deepcopy(cfg))
    else:
        model = PI0ForConditionalGeneration(copy.deepcopy(cfg))
    model = model.to(device=device, dtype=dtype).eval()
    return PI0Adapter(model, proc, seed=seed), " ".join(words)


def pi0_observation(adapter, instruction: str, rng: np.random.Generator) -> Observation:
    """A random image at the vision tower's size, a random state of STATE_DIM values."""
    size = adapter.model.config.vlm_config.vision_config.image_size
    state = rng.uniform(-1, 1, STATE_DIM).astype(np.float32)
    return Observation(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), instruction, state)


def describe_pi0(shape: Pi0Shape) -> dict:
    params = shape.parameters()
    return {**asdict(shape), "image_tokens": shape.image_tokens, "parameters": params,
            "parameters_total": sum(params.values())}


_SIZE_KEYS = {f for f in Pi0Shape.__dataclass_fields__} - {"name", "note"}


def pi0_shape_from_json(path: str | Path) -> Pi0Shape:
    """A Pi0Shape from {"base": "pi0", "vlm_layers": 4, ...}: a named pi0 shape with fields overridden."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read the model config {path}: {e}") from e
    if not isinstance(raw, dict) or raw.get("base") not in PI0_SHAPES:
        raise ConfigError(f"{path}: a pi0 shape file needs \"base\": one of {sorted(PI0_SHAPES)}")
    base = PI0_SHAPES[raw.pop("base")]
    name = str(raw.pop("name", path.stem))
    unknown = sorted(set(raw) - _SIZE_KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown keys {unknown}; pi0 size keys are {sorted(_SIZE_KEYS)}")
    return replace(base, name=name, note=f"{base.name} with {raw} ({path})", **raw)


def _shape_for(name: str) -> Pi0Shape:
    return PI0_SHAPES[name] if name in PI0_SHAPES else pi0_shape_from_json(name)


def _builder(name: str, seed: int, device: torch.device, dtype: torch.dtype) -> BenchModel:
    from .pi0_run import bench_pi0

    shape = _shape_for(name)
    adapter, instruction = build_pi0(shape, seed, device, dtype)
    real_vocab = int(adapter.model.config.vlm_config.text_config.vocab_size)
    if shape.vocab_size is None:
        shape = replace(shape, vocab_size=real_vocab)
    p = shape.parameters()
    note = (f"random weights; pi0: SigLIP {shape.vision_layers} x {shape.vision_width} ({shape.image_tokens} image tokens), "
            f"Gemma {shape.vlm_layers} x {shape.vlm_width} ({shape.heads} heads, {shape.kv_heads} kv, head_dim "
            f"{shape.head_dim}, MLP {shape.vlm_mlp}, vocab {real_vocab}), expert {shape.expert_layers} x "
            f"{shape.expert_width} (MLP {shape.expert_mlp}); chunk {shape.chunk}, {shape.steps} denoising steps; "
            f"{sum(p.values()) / 1e9:.2f} B parameters; {shape.note}")
    return BenchModel(shape.name, adapter, instruction, note, shape=describe_pi0(shape), bench=bench_pi0)


for _name in PI0_SHAPES:
    register_builder(_name, _builder)
    register_json_base(_name, pi0_shape_from_json, _builder)
