"""Load a local transformers checkpoint the ordinary way (`from_pretrained`), never from a hub.

`load_transformers_model(path)` -> (model, processor or None). The attention
implementation is chosen for DTP: SDPA where the text model supports it (AttentionCapture
keeps SDPA computing the output and records rows on the side), eager where the text model
soft-caps attention logits (Gemma2, PaliGemma2), which SDPA cannot do.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ..errors import CheckpointError

__all__ = ["load_transformers_model", "choose_attn_implementation"]

log = logging.getLogger(__name__)


def choose_attn_implementation(config: Any) -> str:
    """"eager" if the text model soft-caps attention logits (Gemma2), else "sdpa"."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    if getattr(text, "attn_logit_softcapping", None) is not None or getattr(text, "model_type", "") == "gemma2":
        return "eager"
    return "sdpa"


def _model_classes():
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    return (AutoModelForImageTextToText, AutoModelForCausalLM)


def load_transformers_model(
    path: str | Path,
    *,
    dtype: Any = "auto",
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
    **from_pretrained_kwargs: Any,
) -> tuple[Any, Any | None]:
    """(model in eval mode, processor or None) from a local checkpoint directory.

    Tries AutoModelForImageTextToText, then AutoModelForCausalLM. The processor is
    AutoProcessor's (None, with a log line, if the directory has none that loads).
    Every call passes local_files_only=True: nothing is downloaded.
    """
    from transformers import AutoConfig, AutoProcessor

    path = Path(path)
    if not (path / "config.json").is_file():
        raise CheckpointError(f"no transformers checkpoint at {path} (expected config.json there)")
    try:
        config = AutoConfig.from_pretrained(str(path), local_files_only=True, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot read the config at {path}: {e}") from e
    attn = attn_implementation or choose_attn_implementation(config)
    errors = []
    model = None
    for auto in _model_classes():
        if type(config) not in auto._model_mapping and not (trust_remote_code and getattr(config, "auto_map", None)):
            continue
        try:
            model = auto.from_pretrained(
                str(path),
                local_files_only=True,
                trust_remote_code=trust_remote_code,
                attn_implementation=attn,
                dtype=dtype,
                **from_pretrained_kwargs,
            )
            break
        except (OSError, ValueError) as e:
            errors.append(f"{auto.__name__}: {e}")
    if model is None:
        detail = "; ".join(errors) or f"no transformers auto class knows model_type {config.model_type!r}"
        raise CheckpointError(f"cannot load the model at {path}: {detail}")
    try:
        processor = AutoProcessor.from_pretrained(str(path), local_files_only=True, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
        log.info("no processor loaded from %s (%s); wrap_model needs one passed in", path, e)
        processor = None
    log.info("loaded %s from %s with %s attention", type(model).__name__, path, attn)
    return model.eval(), processor
