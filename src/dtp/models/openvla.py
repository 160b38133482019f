"""Adapter for OpenVLA-style models: the Prismatic layout, a Llama LM fed projected patches.

An OpenVLA checkpoint (`openvla/openvla-7b`, model_type "openvla") is a
`OpenVLAForActionPrediction` from the checkpoint's own code (`modeling_prismatic.py`) with

    vision_backbone(pixel_values) -> (1, N, D_vis) patch features (DINOv2 + SigLIP, timm)
    projector(features)            -> (1, N, D) patch embeddings
    language_model                  a LlamaForCausalLM

and its sequence is [BOS] [image x N] [prompt tokens] ["▁" (id 29871)] -> 7 action tokens,
with the prompt "In: What action should the robot take to {instruction}?\\nOut:".
This adapter uses only those three submodules and the processor, and runs the same loop as
our TinyVLA's LlamaVLAAdapter: prefill from embeddings with original position ids, image
tokens hidden by the padding mask in pass 2 (exactly removal, tested).

Actions: the last 256 ids of the tokenizer vocabulary (config vocab minus its
`pad_to_multiple_of` padding) are the bins, highest id = lowest bin; a bin decodes to the
centre of OpenVLA's 255 intervals over [-1, 1], then to the dataset's scale with the
checkpoint's `norm_stats[unnorm_key]` (q01, q99, mask), exactly as `predict_action` does.

Loading (`load_openvla`, or `dtp.models.load(path)`) builds the model natively by default
(`openvla_native`: transformers' DINOv2 + SigLIP + Llama, no remote code, no timm). With
trust_remote_code=True it runs the checkpoint's own Python code instead, which needs `timm`
(0.9.x) and was written for transformers 4.40, so only the three submodules above are
called, never its forward or generate. What is tested here: the adapter on a tiny stand-in
with the same module layout and a stand-in processor, the remote-code loader on a local
checkpoint whose "remote code" is that stand-in, and the native loader against timm
(tests/models/test_openvla_timm.py). The real OpenVLA code cannot run here; it is not tested.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError, ConfigError, LayoutError, UnsupportedModelError
from .base import PreparedInputs, TokenLayout, Observation, check_observation
from .generic import HFVLAAdapter, _to_pil

__all__ = ["OpenVLAAdapter", "OpenVLABins", "is_prismatic", "load_openvla"]

log = logging.getLogger(__name__)

OPENVLA_PROMPT = "In: What action should the robot take to {instruction}?\nOut:"


def is_prismatic(model: Any) -> bool:
    """True for a model with the Prismatic layout: vision_backbone, projector, language_model."""
    lm = getattr(model, "language_model", None)
    return (
        hasattr(model, "vision_backbone")
        and hasattr(model, "projector")
        and lm is not None
        and hasattr(lm, "get_input_embeddings")
    )


@dataclass(frozen=True)
class OpenVLABins:
    """OpenVLA's de-tokenisation: token id -> bin centre in [-1, 1] -> dataset scale.

    vocab_size: ids below it are the tokenizer's (32000 for Llama 2); the action bins are its last n_bins.
    q01 / q99 / mask: the action statistics of one dataset (None: return normalised actions).
    """

    vocab_size: int
    n_bins: int = 256
    q01: tuple[float, ...] | None = None
    q99: tuple[float, ...] | None = None
    mask: tuple[bool, ...] | None = None

    def normalized(self, token_ids: np.ndarray) -> np.ndarray:
        edges = np.linspace(-1, 1, self.n_bins)
        centres = (edges[:-1] + edges[1:]) / 2.0
        d = self.vocab_size - np.asarray(token_ids, dtype=np.int64)
        d = np.clip(d - 1, 0, centres.shape[0] - 1)
        return centres[d]

    def __call__(self, token_ids: np.ndarray) -> np.ndarray:
        a = self.normalized(token_ids)
        if self.q01 is None:
            return a.astype(np.float32)
        q01, q99 = np.asarray(self.q01), np.asarray(self.q99)
        if a.shape != q01.shape:
            raise ConfigError(f"{a.shape[0]} action tokens but the statistics have {q01.shape[0]} dimensions")
        mask = np.asarray(self.mask if self.mask is not None else [True] * len(q01), dtype=bool)
        return np.where(mask, 0.5 * (a + 1) * (q99 - q01) + q01, a).astype(np.float32)


def _action_stats(config: Any, unnorm_key: str | None) -> tuple[dict | None, str | None]:
    stats = getattr(config, "norm_stats", None) or {}
    if not stats:
        return None, None
    if unnorm_key is None:
        if len(stats) != 1:
            raise ConfigError(
                f"this checkpoint holds action statistics for {len(stats)} datasets; pass unnorm_key= one of {sorted(stats)}"
            )
        unnorm_key = next(iter(stats))
    if unnorm_key not in stats:
        raise ConfigError(f"unnorm_key {unnorm_key!r} is not in the checkpoint's norm_stats {sorted(stats)}")
    return stats[unnorm_key]["action"], unnorm_key


class OpenVLAAdapter(HFVLAAdapter):
    """OpenVLAForActionPrediction (or any Prismatic-layout model) and its PrismaticProcessor.

    unnorm_key: which dataset's action statistics scale the actions (needed when the
    checkpoint holds several). empty_token_id: appended after the prompt when missing
    ("auto": the tokenizer's "▁" token, 29871 for Llama 2, as OpenVLA's predict_action does).
    Other keywords as HFVLAAdapter (prompt_template, decoder, ...).
    """

    family = "openvla"
    default_prompt = OPENVLA_PROMPT

    def __init__(self, model, processor, *, unnorm_key: str | None = None, empty_token_id: int | str | None = "auto", **kwargs):
        if not is_prismatic(model):
            raise UnsupportedModelError(
                f"{type(model).__name__} lacks the Prismatic layout (vision_backbone, projector, language_model)"
            )
        self._stats, self.unnorm_key = _action_stats(model.config, unnorm_key)
        if "decoder" not in kwargs:
            v = self.vocab_size_of(model)
            s = self._stats or {}
            kwargs["decoder"] = OpenVLABins(
                vocab_size=v,
                n_bins=int(getattr(model.config, "n_action_bins", 256)),
                q01=tuple(s["q01"]) if s else None,
                q99=tuple(s["q99"]) if s else None,
                mask=tuple(s.get("mask", [True] * len(s["q01"]))) if s else None,
            )
            n_bins = kwargs["decoder"].n_bins
            kwargs.setdefault("action_token_ids", torch.arange(v - 1, v - 1 - n_bins, -1))  # index b -> bin b
            if self._stats:
                kwargs.setdefault("n_action_tokens", len(self._stats["q01"]))
        super().__init__(model, processor, **kwargs)
        if empty_token_id == "auto":
            tid = self.tokenizer.convert_tokens_to_ids("▁")
            empty_token_id = tid if isinstance(tid, int) and tid != self.tokenizer.unk_token_id else None
        self.empty_token_id = empty_token_id

    @staticmethod
    def vocab_size_of(model) -> int:
        """Ids of the tokenizer (the config's vocabulary minus its padding to a multiple)."""
        cfg = model.config
        text = cfg.text_config if hasattr(cfg, "text_config") else model.language_model.config
        return int(text.vocab_size - int(getattr(cfg, "pad_to_multiple_of", 0) or 0))

    def vocab_size(self) -> int:
        return self.vocab_size_of(self.model)

    def _language_model(self) -> torch.nn.Module:
        return self.model.language_model

    def _image_token_id(self) -> int:
        return -1  # OpenVLA inserts patch embeddings after BOS; there is no image token id

    @torch.inference_mode()
    def embed(self, input_ids: torch.Tensor, pixel_values: torch.Tensor) -> tuple[torch.Tensor, int]:
        """(1, S, D) prefill embeddings [BOS, patches, rest] and the patch count N."""
        patches = self.model.vision_backbone(pixel_values)  # (1, N, D_vis)
        projected = self.model.projector(patches)  # (1, N, D)
        words = self.lm.get_input_embeddings()(input_ids)  # (1, 1 + P, D)
        return torch.cat([words[:, :1], projected.to(words.dtype), words[:, 1:]], dim=1), int(projected.shape[1])

    def prepare(self, obs: Observation) -> PreparedInputs:
        check_observation(obs)
        out = self.processor(self.prompt_template.format(instruction=obs.instruction), _to_pil(obs.image))
        mi = self._to_model(dict(out))
        ids = mi["input_ids"]
        if ids.shape[0] != 1:
            raise LayoutError("dtp runs one observation at a time (batch 1)")
        if self.empty_token_id is not None and int(ids[0, -1]) != self.empty_token_id:
            ids = torch.cat([ids, torch.tensor([[self.empty_token_id]], device=ids.device)], dim=1)
        embeds, n = self.embed(ids, mi["pixel_values"])
        s = embeds.shape[1]
        reserved = torch.tensor(sorted(self.reserved_token_ids()), dtype=torch.long)
        text_after = ids[0, 1:].cpu()
        prompt = torch.nonzero(~torch.isin(text_after, reserved)).flatten() + 1 + n
        side = math.isqrt(n)
        if side * side != n:
            raise LayoutError(f"{n} patches form no square grid")
        layout = TokenLayout(
            image_positions=torch.arange(1, 1 + n), grid=(side, side), prompt_positions=prompt, seq_len=s
        )
        model_inputs = {"inputs_embeds": embeds, "position_ids": torch.arange(s, device=embeds.device).unsqueeze(0)}
        return PreparedInputs(layout=layout, model_inputs=model_inputs)

    def prefill_kwargs(self, model_inputs: dict[str, Any]) -> dict[str, Any]:
        return {"inputs_embeds": model_inputs["inputs_embeds"]}

    def _decoder(self) -> torch.nn.Module:
        return self.lm  # the patch embeddings are spliced in already (prefill_kwargs: inputs_embeds)


def load_openvla(path: str | Path, *, trust_remote_code: bool = False, dtype: Any = "auto", **adapter_kwargs: Any) -> OpenVLAAdapter:
    """Load a local OpenVLA checkpoint directory and wrap it. Nothing is downloaded.

    By default the native path (dtp.models.openvla_native: transformers' own DINOv2, SigLIP and
    Llama, no remote code, no timm) builds checkpoints whose config names their timm towers.
    With trust_remote_code=True the checkpoint's own modeling code (named in config.json's
    auto_map) is executed instead; it needs `timm` 0.9.x and was written for transformers 4.40.
    """
    from transformers import AutoProcessor
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    path = Path(path)
    cfg = json.loads((path / "config.json").read_text())
    if not trust_remote_code and cfg.get("timm_model_ids"):
        from .openvla_native import load_openvla_native

        return load_openvla_native(path, dtype=dtype, **adapter_kwargs)
    auto_map = cfg.get("auto_map") or {}
    ref = auto_map.get("AutoModelForVision2Seq") or auto_map.get("AutoModelForImageTextToText")
    if ref is None:
        raise CheckpointError(f"{path}/config.json names no model class in auto_map; is this an OpenVLA checkpoint?")
    code = path / f"{ref.split('.')[0]}.py"
    if not code.is_file():
        raise CheckpointError(f"{path} lacks {code.name}, the OpenVLA modeling code its config names ({ref})")
    if not trust_remote_code:
        raise CheckpointError(
            f"{path} is an OpenVLA checkpoint whose config names no timm vision towers (timm_model_ids), so the native "
            f"loader cannot build it; its model class lives in its own {code.name}: read that file, then "
            "pass trust_remote_code=True to run it (it needs `pip install timm==0.9.16`)"
        )
    try:
        cls = get_class_from_dynamic_module(ref, str(path), local_files_only=True)
        model = cls.from_pretrained(str(path), local_files_only=True, trust_remote_code=True, attn_implementation="sdpa", dtype=dtype)
        processor = AutoProcessor.from_pretrained(str(path), local_files_only=True, trust_remote_code=True)
    except (OSError, ValueError, ImportError) as e:
        raise CheckpointError(f"could not load the OpenVLA checkpoint at {path}: {e}") from e
    return OpenVLAAdapter(model.eval(), processor, **adapter_kwargs)
