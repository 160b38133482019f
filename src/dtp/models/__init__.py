"""Model adapters behind one protocol, and a registry that picks one from a model's class or config.

`wrap_model(model, processor)` wraps an already-loaded model; `load(name_or_path)` loads a
checkpoint (our TinyVLA, or a transformers checkpoint through `from_pretrained`) and wraps it.
Adding a family is one new module and one `register_adapter` call.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import CheckpointError, UnsupportedModelError
from ..shipped import SHIPPED_MODELS, shipped_model_path, unknown_model_message
from .base import Generation, Observation, PreparedInputs, TokenLayout, Trace, VLAAdapter

__all__ = [
    "AdapterEntry",
    "register_adapter",
    "registered_adapters",
    "wrap_model",
    "load",
    "shipped_model_path",
    "Observation",
    "PreparedInputs",
    "TokenLayout",
    "Trace",
    "Generation",
    "VLAAdapter",
]


@dataclass(frozen=True)
class AdapterEntry:
    """name; matches(model) says whether the adapter handles an already-loaded model;
    wrap(model, processor, **kw) builds the adapter; load(path, **kw) loads from a directory
    (None: loaded through transformers then wrapped); model_types: config model_type values it loads."""

    name: str
    matches: Callable[[Any], bool]
    wrap: Callable[..., VLAAdapter]
    load: Callable[..., VLAAdapter] | None = None
    model_types: tuple[str, ...] = ()


_REGISTRY: dict[str, AdapterEntry] = {}


def register_adapter(entry: AdapterEntry) -> None:
    """Add (or replace) an adapter family; later registrations are tried first."""
    _REGISTRY.pop(entry.name, None)
    _REGISTRY[entry.name] = entry


def registered_adapters() -> list[str]:
    return list(_REGISTRY)


def wrap_model(model: Any, processor: Any = None, **kwargs: Any) -> VLAAdapter:
    """Wrap a loaded model in the adapter whose `matches` accepts it (most recent registration first)."""
    for entry in reversed(list(_REGISTRY.values())):
        if entry.matches(model):
            return entry.wrap(model, processor, **kwargs)
    raise UnsupportedModelError(
        f"no dtp adapter handles {type(model).__name__}; registered: {registered_adapters()}. "
        "Implement the VLAAdapter protocol (see docs/use-with-your-model.md) and register it."
    )


def load(name_or_path: str | Path = "tinyvla", **kwargs: Any) -> VLAAdapter:
    """Load an adapter: a shipped model by name ("tinyvla", "tinyvla-plain"), or a checkpoint directory."""
    name = str(name_or_path)
    path = shipped_model_path(name) if name in SHIPPED_MODELS else Path(name_or_path)
    cfg_file = path / "config.json"
    if not path.exists():
        raise CheckpointError(unknown_model_message(name))
    if not cfg_file.is_file():
        raise CheckpointError(
            f"no checkpoint at {path} (expected {cfg_file}); hub downloads are not attempted, "
            "pass a local directory or 'tinyvla' for the shipped model"
        )
    try:
        model_type = json.loads(cfg_file.read_text()).get("model_type")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{cfg_file} is not valid JSON: {e}") from e
    for entry in reversed(list(_REGISTRY.values())):
        if model_type in entry.model_types and entry.load is not None:
            return entry.load(path, **kwargs)
    for entry in reversed(list(_REGISTRY.values())):
        if model_type in entry.model_types:
            from .hf_loading import load_transformers_model

            model, processor = load_transformers_model(path)
            return entry.wrap(model, processor, **kwargs)
    raise CheckpointError(f"{path} holds a {model_type!r} model, which no dtp adapter loads; registered: {registered_adapters()}")


def _register_builtin() -> None:
    from ..tinyvla.modeling import MODEL_TYPE, TinyVLA
    from .generic import GenericVLAAdapter, is_transformers_model
    from .llama_vla import LlamaVLAAdapter
    from .openvla import OpenVLAAdapter, is_prismatic, load_openvla
    from .paligemma import PaliGemmaAdapter, is_paligemma
    from .pi0 import PI0Adapter, is_pi0, load_pi0
    from .qwen2_5_vl import Qwen2_5_VLAdapter, is_qwen2_5_vl

    # Registered first, so tried last: any transformers model; raises UnsupportedModelError naming what is missing.
    register_adapter(
        AdapterEntry(
            name="generic",
            matches=is_transformers_model,
            wrap=lambda m, proc, **kw: GenericVLAAdapter(m, proc, **kw),
            model_types=GenericVLAAdapter.model_types,
        )
    )
    register_adapter(
        AdapterEntry(
            name="tinyvla",
            matches=lambda m: isinstance(m, TinyVLA),
            wrap=lambda m, tok, **kw: LlamaVLAAdapter(m, tok, **kw),
            load=lambda p, **kw: LlamaVLAAdapter.from_pretrained(p, **kw),
            model_types=(MODEL_TYPE,),
        )
    )
    register_adapter(
        AdapterEntry(
            name="openvla",
            matches=is_prismatic,
            wrap=lambda m, proc, **kw: OpenVLAAdapter(m, proc, **kw),
            load=lambda p, **kw: load_openvla(p, **kw),
            model_types=("openvla",),
        )
    )
    register_adapter(
        AdapterEntry(
            name="paligemma",
            matches=is_paligemma,
            wrap=lambda m, proc, **kw: PaliGemmaAdapter(m, proc, **kw),
            model_types=("paligemma",),
        )
    )
    register_adapter(
        AdapterEntry(
            name="pi0",
            matches=is_pi0,
            wrap=lambda m, proc, **kw: PI0Adapter(m, proc, **kw),
            load=lambda p, **kw: load_pi0(p, **kw),
            model_types=PI0Adapter.model_types,
        )
    )
    register_adapter(
        AdapterEntry(
            name="qwen2_5_vl",
            matches=is_qwen2_5_vl,
            wrap=lambda m, proc, **kw: Qwen2_5_VLAdapter(m, proc, **kw),
            model_types=("qwen2_5_vl",),
        )
    )


_register_builtin()
