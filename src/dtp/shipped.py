"""The checkpoints that ship inside the package, by name.

Light (no torch): the command line checks `--model` against these names before loading anything.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from .errors import CheckpointError, did_you_mean

# Checkpoints that ship inside the package, by name -> folder under dtp/assets. "tinyvla" is the
# default model, the grounded TinyVLA (docs/training.md, fourth run); "tinyvla-plain" names the
# model trained on the plain benchmark (assets/tinyvla), for side-by-side runs; "tinyvla-libero" the
# model trained on clean LIBERO-Object demonstrations (7-dim actions, 128 px; docs/training.md, LIBERO).
SHIPPED_MODELS = {"tinyvla": "tinyvla_grounded", "tinyvla-plain": "tinyvla", "tinyvla-libero": "tinyvla_libero"}
VARIANT_KEY = "dtp_benchmark_variant"  # in a TinyVLA's config.extra: the benchmark variant of its training demos


def shipped_model_path(name: str = "tinyvla") -> Path:
    """Directory of a checkpoint that ships inside the package (see SHIPPED_MODELS)."""
    if name not in SHIPPED_MODELS:
        raise CheckpointError(
            f"no shipped model named {name!r}{did_you_mean(name, SHIPPED_MODELS)}; shipped: {', '.join(SHIPPED_MODELS)}"
        )
    return Path(str(resources.files("dtp") / "assets" / SHIPPED_MODELS[name]))


def unknown_model_message(name: str) -> str:
    """What to say about a --model that is neither a shipped name nor an existing folder."""
    return (f"no checkpoint at {name} and no shipped model of that name{did_you_mean(name, SHIPPED_MODELS)}; "
            f"shipped models: {', '.join(SHIPPED_MODELS)}; or give a local checkpoint folder (nothing is downloaded)")


def trained_variant(name: str) -> str | None:
    """The benchmark variant a shipped model was trained on, as its checkpoint records it (None: not recorded)."""
    config = json.loads((shipped_model_path(name) / "config.json").read_text())
    return config.get("extra", {}).get(VARIANT_KEY)
