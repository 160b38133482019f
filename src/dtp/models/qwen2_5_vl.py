"""Adapter for Qwen2.5-VL (Nora's base).

Image tokens are the vision tower's output after its 2x2 patch merge: an image of
(t, h, w) patches (`image_grid_thw`) gives t * (h/2) * (w/2) tokens, row-major over an
(h/2, w/2) grid (t = 1 for a still image).

Positions are 3-D multimodal rotary ids (temporal, height, width). Pitfalls, each pinned
by a test:
- a padding mask with holes alone raises in `get_rope_index`, and positions derived from a
  cumulative sum shift every token after a hole; so the 3-D positions are computed ONCE
  from the unpruned sequence (in `prepare`) and passed explicitly in both passes; mask and
  removal then agree;
- without `mm_token_type_ids` the model silently falls back to 1-D positions: it is passed;
- the model caches `rope_deltas` between calls: it is reset before and after each pass;
- generated token t sits at position max(prefill positions) + 1 + t on all three axes.

Nora decodes actions with the FAST tokenizer (a hub asset): pass `decoder=` and
`action_token_ids=` (Nora's action ids) and `stop_token_ids=(eos,)`. The last 256 ids of
Qwen's base vocabulary are ordinary text pieces, not action bins, so without a decoder or
explicit action ids this adapter refuses (ActionDecodingError) rather than guess.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import LayoutError
from .generic import HFVLAAdapter

__all__ = ["Qwen2_5_VLAdapter", "is_qwen2_5_vl"]


def is_qwen2_5_vl(model: Any) -> bool:
    from transformers import Qwen2_5_VLForConditionalGeneration

    return isinstance(model, Qwen2_5_VLForConditionalGeneration)


class Qwen2_5_VLAdapter(HFVLAAdapter):
    """Qwen2_5_VLForConditionalGeneration and its Qwen2_5_VLProcessor (chat template used when present)."""

    family = "qwen2_5_vl"
    default_prompt = "{instruction}"
    default_bins_refusal = (
        "Qwen2.5-VL policies (Nora) emit FAST action tokens, not 256 bins over the last vocabulary ids: pass "
        "decoder=callable(token_ids) -> action with action_token_ids= and stop_token_ids=, or action_token_ids= "
        "(256 ids, bin order) if your checkpoint was trained with 256-bin tokens"
    )

    @property
    def merge_size(self) -> int:
        return int(self.model.config.vision_config.spatial_merge_size)

    def grid_for(self, model_inputs: dict[str, Any], n: int) -> tuple[int, int]:
        thw = model_inputs.get("image_grid_thw")
        if thw is None or thw.shape[0] != 1:
            raise LayoutError("Qwen2.5-VL inputs must hold exactly one image_grid_thw row (one image)")
        t, h, w = (int(x) for x in thw[0])
        m = self.merge_size
        if t != 1:
            raise LayoutError(f"one still image expected, got {t} temporal patches")
        g = (h // m, w // m)
        if g[0] * g[1] != n:
            raise LayoutError(f"{n} image tokens do not match image_grid_thw {tuple(thw[0].tolist())} merged {m}x{m}")
        return g

    def prefill_positions(self, model_inputs: dict[str, Any]) -> torch.Tensor:
        """(3, 1, S) rotary positions of the unpruned sequence (computed once, reused by both passes)."""
        if "mm_token_type_ids" not in model_inputs:
            raise LayoutError("the processor returned no mm_token_type_ids; Qwen2.5-VL would fall back to 1-D positions")
        positions, _ = self.model.model.get_rope_index(
            model_inputs["input_ids"],
            mm_token_type_ids=model_inputs["mm_token_type_ids"],
            image_grid_thw=model_inputs["image_grid_thw"],
        )
        return positions

    def step_positions(self, prefill_positions: torch.Tensor, t: int) -> torch.Tensor:
        nxt = prefill_positions.amax(dim=(0, 2), keepdim=True) + 1 + t  # (1, B, 1)
        return nxt.expand(3, -1, 1).clone()

    def _reset_state(self) -> None:
        self.model.model.rope_deltas = None
