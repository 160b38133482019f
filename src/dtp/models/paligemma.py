"""Adapter for PaliGemma / PaliGemma2 (SigLIP + Gemma / Gemma2), SpatialVLA's base.

Sequence: [image x N] [BOS] [prompt] ["\\n"] -> action tokens. Image and prompt form one
bidirectional prefix (token_type_ids == 0, the processor's prefix-LM mask, kept intact);
generated tokens are the causal suffix.

What differs from a plain Llama-style VLM, each pinned by a test:
- positions start at 1 (PaliGemma's convention); `generate` takes no inputs_embeds, so
  the greedy loop is written here with explicit position ids: prefill 1..S, then S+1+t;
- the patch grid is the vision config's image_size / patch_size;
- Gemma2 soft-caps attention logits (its SDPA path is refused, the model runs eager and
  AttentionCapture computes rows from the soft-capped scores) and alternates sliding-window
  layers (their decode cache is cropped; the capture offsets key columns). Capture is set
  on the language model's text config only, so SigLIP keeps its own attention.
- pruning hides image tokens with the padding mask while every token keeps its original
  position: equal to removal as long as the sequence fits Gemma2's sliding window
  (4096 tokens in PaliGemma2, about 300 used), which the tests check.

SpatialVLA itself (model_type "spatialvla", remote code with Ego3D position encoding and
its own spatial action tokenizer) is not wrapped by this class; a PaliGemma2 checkpoint
fine-tuned for actions is, with `decoder=` for non-bin action schemes.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from ..errors import LayoutError
from .generic import HFVLAAdapter

__all__ = ["PaliGemmaAdapter", "is_paligemma"]

log = logging.getLogger(__name__)


def is_paligemma(model: Any) -> bool:
    from transformers import PaliGemmaForConditionalGeneration

    return isinstance(model, PaliGemmaForConditionalGeneration)


class PaliGemmaAdapter(HFVLAAdapter):
    """PaliGemmaForConditionalGeneration (Gemma or Gemma2 text model) and its PaliGemmaProcessor."""

    family = "paligemma"

    def __init__(self, model, processor, **kwargs):
        super().__init__(model, processor, **kwargs)
        softcap = getattr(self.text_config, "attn_logit_softcapping", None)
        if softcap is not None and self.text_config._attn_implementation != "eager":
            log.warning(
                "this Gemma2 text model soft-caps attention logits but runs %r attention, which ignores the cap; "
                "load it with attn_implementation='eager' (dtp.models.load does)",
                self.text_config._attn_implementation,
            )

    def build_text(self, instruction: str) -> str:
        # The processor inserts BOS after the image tokens and "\n" after the prompt.
        image_token = getattr(self.processor, "image_token", "<image>")
        return image_token + self.prompt_template.format(instruction=instruction)

    def grid_for(self, model_inputs: dict[str, Any], n: int) -> tuple[int, int]:
        vc = self.model.config.vision_config
        g = (vc.image_size // vc.patch_size, vc.image_size // vc.patch_size)
        if g[0] * g[1] != n:
            raise LayoutError(f"{n} image tokens, but the vision config's {vc.image_size}/{vc.patch_size} grid is {g}")
        return g

    def prefill_positions(self, model_inputs: dict[str, Any]) -> torch.Tensor:
        s = model_inputs["input_ids"].shape[1]
        return torch.arange(1, s + 1).unsqueeze(0)  # PaliGemma positions are 1-indexed

    def prefill_kwargs(self, model_inputs: dict[str, Any]) -> dict[str, Any]:
        kw = super().prefill_kwargs(model_inputs)
        if "token_type_ids" not in kw:  # no suffix: the whole prompt is the bidirectional prefix
            kw["token_type_ids"] = torch.zeros_like(model_inputs["input_ids"])
        return kw
