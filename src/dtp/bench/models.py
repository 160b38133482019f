"""The models `dtp bench` measures, built by name through a registry of builders.

Builders: "tinyvla" (the shipped checkpoint), "vla-12L-768" and "tiny" (fixed TinyVLA configs), and
every shape of `shapes` (named, or a .json path): a TinyVLA of that size with random weights.
Another family (e.g. pi0) is one more `register_builder` call in its own module.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from ..errors import CheckpointError, ConfigError
from ..models.base import Observation, PreparedInputs
from .shapes import SHAPES, ModelShape, describe, resolve_shape

__all__ = ["BenchModel", "register_builder", "register_json_base", "builder_names", "check_model_name", "build_model", "shape_of",
           "random_observation", "env_frames", "FALLBACK_INSTRUCTION", "TWENTY_WORDS"]

FALLBACK_INSTRUCTION = "push the puck to the goal"
# 20 words: the prompt of the Llama-sized model is 20 tokens long.
TWENTY_WORDS = "pick up the small red block on the left side of the table and place it inside the blue box".split()


@dataclass
class BenchModel:
    """An adapter to measure, the instruction it is given, and what it is (said in the report)."""

    name: str
    adapter: Any
    instruction: str
    note: str
    shipped: bool = False
    shape: dict | None = None
    bench: Callable[..., dict] | None = None  # (model, BenchConfig) -> results; None: the token models' run.bench_model
    # reads Meta-World frames (the benchmark's instruction words, 96 px): the bench then times it on simulator
    # frames, checks pass-2 agreement and measures rollouts; random-weight shapes get random images
    benchmark_frames: bool = False


# name -> builder(name, seed, device, dtype) -> BenchModel
Builder = Callable[[str, int, torch.device, torch.dtype], BenchModel]
_BUILDERS: dict[str, Builder] = {}


# shape .json files whose "base" is another family's shape: base -> (check(path): raises ConfigError, builder)
_JSON_BASES: dict[str, tuple[Callable[[str], Any], Builder]] = {}


def register_builder(name: str, builder: Builder) -> None:
    _BUILDERS[name] = builder


def register_json_base(base: str, check: Callable[[str], Any], builder: Builder) -> None:
    """Let shape .json files with {"base": base, ...} go to `builder` (after `check(path)`) instead of a TinyVLA."""
    _JSON_BASES[base] = (check, builder)


def _json_base(name: str) -> str | None:
    """The "base" of a shape .json when another family registered it, else None (read errors: shapes.py's)."""
    if not name.endswith(".json"):
        return None
    try:
        raw = json.loads(Path(name).read_text())
    except (OSError, ValueError):
        return None
    base = raw.get("base") if isinstance(raw, dict) else None
    return base if isinstance(base, str) and base in _JSON_BASES else None


def builder_names() -> tuple[str, ...]:
    return tuple(_BUILDERS) + tuple(SHAPES)


def check_model_name(name: str) -> None:
    """ConfigError unless `name` is a registered builder, a named shape or a readable shape .json."""
    base = _json_base(name)
    if base is not None:
        _JSON_BASES[base][0](name)
        return
    if name in _BUILDERS or resolve_shape(name) is not None:
        return
    raise ConfigError(f"unknown bench model {name!r}; choose from {builder_names()} or pass a shape .json file")


def build_model(name: str, seed: int = 0, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> BenchModel:
    device = torch.device(device)
    if name in _BUILDERS:
        return _BUILDERS[name](name, seed, device, dtype)
    base = _json_base(name)
    if base is not None:
        return _JSON_BASES[base][1](name, seed, device, dtype)
    shape = resolve_shape(name)
    if shape is None:
        check_model_name(name)
    return _from_shape(shape, seed, device, dtype)


def _place(model: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    return model.to(device=device, dtype=dtype).eval()


def _random_tinyvla(cfg, words: list[str], seed: int, device: torch.device, dtype: torch.dtype):
    from ..models.llama_vla import LlamaVLAAdapter
    from ..tinyvla import TinyVLA, build_word_tokenizer

    torch.manual_seed(seed)
    if device.type == "cuda":  # build there: a 7B-shaped model does not fit the host in float32 next to others
        with torch.device(device):
            model = TinyVLA(cfg)
    else:
        model = TinyVLA(cfg)
    return LlamaVLAAdapter(_place(model, device, dtype), build_word_tokenizer(words))


def _env_words() -> tuple[str, list[str]]:
    """An instruction of the benchmark and every word its instructions use (fallbacks without dtp.envs)."""
    try:
        from ..envs.tasks import all_instruction_words, instruction_for

        return instruction_for("push", 0), all_instruction_words()
    except Exception:  # the simulator package is optional for the bench
        return FALLBACK_INSTRUCTION, FALLBACK_INSTRUCTION.split()


def _tinyvla(name, seed, device, dtype) -> BenchModel:
    """The shipped checkpoint, or a random TinyVLA of the default config when it is missing (said in `note`)."""
    from .. import models
    from ..tinyvla import TinyVLAConfig

    instruction, words = _env_words()
    try:
        adapter = models.load("tinyvla")
        adapter.model = _place(adapter.model, device, dtype)
        return BenchModel(name, adapter, instruction, "shipped checkpoint", shipped=True, benchmark_frames=True)
    except CheckpointError as e:
        note = f"RANDOM TinyVLA of the default config (shipped checkpoint missing: {e})"
        return BenchModel(name, _random_tinyvla(TinyVLAConfig(), words, seed, device, dtype), instruction, note,
                          benchmark_frames=True)


def _vla_12l_768(name, seed, device, dtype) -> BenchModel:
    """Random weights, 12 layers x 768, 16x16 = 256 image tokens, 20 prompt tokens, 7 action tokens."""
    from ..tinyvla import TinyVLAConfig

    cfg = TinyVLAConfig(
        image_size=224, patch_size=14, vision_width=256, hidden_size=768, num_layers=12, num_heads=12,
        intermediate_size=2048, num_words=64, action_dims=7, max_positions=512,
    )
    adapter = _random_tinyvla(cfg, TWENTY_WORDS, seed, device, dtype)
    return BenchModel(name, adapter, " ".join(TWENTY_WORDS), "random weights, Llama 12 layers x 768, 12 heads")


def _tiny(name, seed, device, dtype) -> BenchModel:
    """The test-sized model."""
    from ..tinyvla import TinyVLAConfig

    cfg = TinyVLAConfig(
        image_size=48, patch_size=8, vision_width=32, hidden_size=64, num_layers=3, num_heads=4,
        intermediate_size=128, num_words=32,
    )
    words = FALLBACK_INSTRUCTION.split()
    return BenchModel(name, _random_tinyvla(cfg, words, seed, device, dtype), FALLBACK_INSTRUCTION, "random weights, test size")


def _prompt_words(n: int) -> list[str]:
    return [TWENTY_WORDS[i] if i < len(TWENTY_WORDS) else f"word{i}" for i in range(n)]


def _from_shape(shape: ModelShape, seed: int, device: torch.device, dtype: torch.dtype) -> BenchModel:
    """A TinyVLA whose language model has the shape's sizes, random weights."""
    from ..tinyvla import TinyVLAConfig

    side = shape.grid_side
    cfg = TinyVLAConfig(
        image_size=side * shape.patch_size, patch_size=shape.patch_size, vision_width=shape.vision_width,
        hidden_size=shape.hidden_size, num_layers=shape.num_hidden_layers, num_heads=shape.num_attention_heads,
        num_kv_heads=shape.kv_heads, intermediate_size=shape.intermediate_size, num_words=shape.vocab_size - 256,
        action_dims=shape.action_tokens, max_positions=max(512, 2 * (shape.image_tokens + shape.prompt_tokens)),
    )
    words = _prompt_words(shape.prompt_tokens)
    adapter = _random_tinyvla(cfg, words, seed, device, dtype)
    billions = shape.parameters() / 1e9
    note = (f"random weights, Llama {shape.num_hidden_layers} layers x {shape.hidden_size}, {shape.num_attention_heads} heads "
            f"({shape.kv_heads} kv), MLP {shape.intermediate_size}, vocab {shape.vocab_size}: {billions:.2f} B LM parameters; "
            f"{shape.note}")
    return BenchModel(shape.name, adapter, " ".join(words), note, shape=describe(shape))


register_builder("tinyvla", _tinyvla)
register_builder("vla-12L-768", _vla_12l_768)
register_builder("tiny", _tiny)


# -- inputs -----------------------------------------------------------------------------------------


def shape_of(adapter, inputs: PreparedInputs) -> dict[str, int]:
    lay = inputs.layout
    cfg = adapter.lm.config
    return {
        "layers": int(cfg.num_hidden_layers),
        "heads": int(cfg.num_attention_heads),
        "width": int(cfg.hidden_size),
        "seq_len": int(lay.seq_len),
        "image_tokens": lay.num_image_tokens,
        "prompt_tokens": int(lay.prompt_positions.numel()),
        "action_tokens": int(adapter.n_action_tokens),
    }


def random_observation(adapter, instruction: str, rng: np.random.Generator) -> Observation:
    size = adapter.model.config.image_size
    proprio = rng.normal(size=adapter.model.config.proprio_dims).astype(np.float32)
    return Observation(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), instruction, proprio)


def env_frames(adapter, n: int, seed: int) -> Iterator[Observation]:
    """Meta-World frames at the model's image size: a few tasks and seeds, the scripted expert acting,
    every step's frame. Raises ImportError (or the env's error) when the simulator is unavailable."""
    from ..envs import TASKS, make_env

    size = adapter.model.config.image_size
    tasks = list(TASKS)
    produced, episode = 0, 0
    while produced < n:
        env = make_env(tasks[episode % len(tasks)], image_size=size, variant="plain")  # as docs/performance.md measured
        try:
            obs, _ = env.reset(seed=seed + episode)
            for _ in range(env.max_steps):
                yield Observation.from_dict(obs)
                produced += 1
                if produced >= n:
                    return
                obs, _, terminated, truncated, _ = env.step(env.expert_action())
                if terminated or truncated:
                    break
        finally:
            env.close()
        episode += 1
