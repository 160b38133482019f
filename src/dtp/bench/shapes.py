"""Model sizes for `dtp bench`: named shapes and JSON files, so one command measures any size.

A shape is the language model's dimensions plus the sequence DTP sees (image tokens, prompt
tokens, action tokens). The bench builds a TinyVLA of that shape with random weights: a small
conv patch encoder and projector in front of a stock `LlamaForCausalLM` of exactly these sizes.
The vision encoder is not the shape's (OpenVLA's DINOv2 + SigLIP run once per step in every
variant, so leaving them out makes the overhead ratios upper bounds).

JSON: {"base": "llama-7b", "num_hidden_layers": 4} takes a named shape and overrides fields;
without "base" every size field must be given. Keys of a transformers Llama config.json
(hidden_size, num_hidden_layers, num_attention_heads, num_key_value_heads, intermediate_size,
vocab_size) are read as they are; other keys of such a file are ignored only if "ignore_unknown"
is true, else they are an error (a typo must not measure the wrong model).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from ..errors import ConfigError

__all__ = ["ModelShape", "SHAPES", "shape_from_json", "resolve_shape"]


def not_positive_ints(sizes: dict[str, object]) -> dict[str, object]:
    """The sizes that are not positive integers (a bool is no size), so that one error names them all."""
    return {k: v for k, v in sizes.items() if not isinstance(v, int) or isinstance(v, bool) or v < 1}


@dataclass(frozen=True)
class ModelShape:
    """Sizes of a bench model. image_tokens must be a square (a grid of patch_size px patches)."""

    name: str
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    num_key_value_heads: int | None = None  # None: as many as attention heads
    vocab_size: int = 32064  # Llama 2's 32000 padded to a multiple of 64, as OpenVLA
    image_tokens: int = 256
    patch_size: int = 14
    vision_width: int = 256
    prompt_tokens: int = 20
    action_tokens: int = 7
    note: str = ""

    def __post_init__(self) -> None:
        ints = {f.name: getattr(self, f.name) for f in fields(self) if f.type in ("int", "int | None")}
        bad = not_positive_ints({k: v for k, v in ints.items() if v is not None})
        if bad:
            raise ConfigError(f"model shape {self.name!r}: sizes must be positive integers, got {bad}")
        side = math.isqrt(self.image_tokens)
        if side * side != self.image_tokens:
            raise ConfigError(f"model shape {self.name!r}: image_tokens {self.image_tokens} is not a square grid")
        if self.patch_size % 2:
            raise ConfigError(f"model shape {self.name!r}: patch_size must be even (TinyVLA's stem halves the image)")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(f"model shape {self.name!r}: hidden_size {self.hidden_size} is not divisible by "
                              f"{self.num_attention_heads} heads")
        if self.kv_heads > self.num_attention_heads or self.num_attention_heads % self.kv_heads:
            raise ConfigError(f"model shape {self.name!r}: {self.num_attention_heads} heads cannot share "
                              f"{self.kv_heads} key/value heads")
        if self.vocab_size <= 256:
            raise ConfigError(f"model shape {self.name!r}: vocab_size must exceed the 256 action bins")
        if self.prompt_tokens > self.vocab_size - 256 - 3:
            raise ConfigError(f"model shape {self.name!r}: {self.prompt_tokens} prompt words do not fit the vocabulary")

    @property
    def kv_heads(self) -> int:
        return self.num_key_value_heads or self.num_attention_heads

    @property
    def grid_side(self) -> int:
        return math.isqrt(self.image_tokens)

    def parameters(self) -> int:
        """Language-model parameters (embeddings + layers + head), the number the shape is named by."""
        d, f, L, v = self.hidden_size, self.intermediate_size, self.num_hidden_layers, self.vocab_size
        kv = d // self.num_attention_heads * self.kv_heads
        per_layer = d * d * 2 + d * kv * 2 + 3 * d * f + 2 * d
        return v * d * 2 + L * per_layer + d


SHAPES: dict[str, ModelShape] = {
    s.name: s
    for s in (
        ModelShape("llama-7b", 4096, 32, 32, 11008,
                   note="OpenVLA-7B's language model (Llama 2 7B, vocabulary 32064), 16 x 16 image tokens"),
        ModelShape("llama-1b", 2048, 22, 32, 5632, num_key_value_heads=4, vocab_size=32000,
                   note="TinyLlama-1.1B's language model (grouped-query attention, 4 key/value heads)"),
    )
}

_SIZE_KEYS = {f.name for f in fields(ModelShape)} - {"name", "note"}


def shape_from_json(path: str | Path) -> ModelShape:
    """A ModelShape from a JSON file (see the module docstring)."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read the model config {path}: {e}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a JSON object of sizes")
    base_name = raw.pop("base", None)
    ignore = bool(raw.pop("ignore_unknown", False))
    name = str(raw.pop("name", path.stem))
    note = str(raw.pop("note", f"sizes from {path}"))
    unknown = sorted(set(raw) - _SIZE_KEYS)
    if unknown and not ignore:
        raise ConfigError(f"{path}: unknown keys {unknown}; size keys are {sorted(_SIZE_KEYS)} (or set ignore_unknown)")
    sizes = {k: v for k, v in raw.items() if k in _SIZE_KEYS}
    if base_name is not None:
        if base_name not in SHAPES:
            raise ConfigError(f"{path}: base {base_name!r} is not a named shape ({sorted(SHAPES)})")
        base = SHAPES[base_name]
        return replace(base, name=name, note=f"{base_name} with {sizes} ({path})" if sizes else base.note, **sizes)
    needed = ["hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"]
    missing = [k for k in needed if k not in sizes]
    if missing:
        raise ConfigError(f"{path}: missing {missing} (or give \"base\": one of {sorted(SHAPES)})")
    return ModelShape(name=name, note=note, **sizes)


def resolve_shape(name: str) -> ModelShape | None:
    """The shape a bench model name stands for: a named shape, a path to a .json file, or None."""
    if name in SHAPES:
        return SHAPES[name]
    if name.endswith(".json"):
        return shape_from_json(name)
    return None


def describe(shape: ModelShape) -> dict:
    return {**asdict(shape), "kv_heads": shape.kv_heads, "lm_parameters": shape.parameters()}
