"""The one protocol every model family implements, and the data that crosses it.

An adapter knows where its image tokens are and how to hide them exactly; DTPPolicy and
the evaluation code know nothing else about the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from ..capture import CaptureSpec
from ..errors import InputError, LayoutError

__all__ = [
    "Observation",
    "TokenLayout",
    "PreparedInputs",
    "Trace",
    "Generation",
    "Pass1Cache",
    "VLAAdapter",
    "check_observation",
    "declared_image_size",
]


@dataclass
class Observation:
    """What a policy sees at one control step."""

    image: np.ndarray  # (H, W, 3) uint8
    instruction: str
    proprio: np.ndarray | None = None  # (P,) float
    # read only by region sources (dtp.regions): region="oracle" / region="mask"
    segmentation: np.ndarray | None = None  # (H, W) int labels of the same frame (dtp.envs labels)
    region_mask: np.ndarray | torch.Tensor | None = None  # bool (h, w) patches or (H, W) pixels

    @classmethod
    def from_dict(cls, obs: dict[str, Any]) -> "Observation":
        return cls(image=obs["image"], instruction=obs["instruction"], proprio=obs.get("proprio"),
                   segmentation=obs.get("segmentation"), region_mask=obs.get("region_mask"))


def check_observation(obs: Observation, image_size: tuple[int, int] | None = None) -> None:
    """Raise InputError naming the problem with an observation."""
    img = obs.image
    if not isinstance(img, np.ndarray):
        raise InputError(f"image must be a numpy array (H, W, 3) uint8, got {type(img).__name__}")
    if img.ndim != 3 or img.shape[-1] != 3:
        raise InputError(f"image must have shape (H, W, 3), got {img.shape}")
    if img.dtype != np.uint8:
        raise InputError(f"image must be uint8 in [0, 255], got dtype {img.dtype}")
    if image_size is not None and tuple(img.shape[:2]) != tuple(image_size):
        raise InputError(f"this model takes {image_size[0]}x{image_size[1]} images, got {img.shape[0]}x{img.shape[1]}")
    if not isinstance(obs.instruction, str) or not obs.instruction.strip():
        raise InputError("the instruction is empty; give the task in words")


@dataclass(frozen=True)
class TokenLayout:
    """Where things are in the model's sequence (absolute positions)."""

    image_positions: torch.Tensor  # (N,) long, row-major over the grid
    grid: tuple[int, int]  # (h, w) patch grid, h * w == N
    prompt_positions: torch.Tensor  # (P,) long, instruction tokens used for relevance
    seq_len: int  # length of the prefill sequence (actions follow it)

    def __post_init__(self) -> None:
        n = int(self.image_positions.numel())
        if n == 0:
            raise LayoutError("the model's sequence has no image tokens; DTP needs an image span")
        if self.grid[0] * self.grid[1] != n:
            raise LayoutError(f"grid {self.grid} does not match {n} image tokens")
        if self.prompt_positions.numel() == 0:
            raise LayoutError("the model's sequence has no prompt tokens after the image")

    @property
    def num_image_tokens(self) -> int:
        return int(self.image_positions.numel())


@dataclass
class PreparedInputs:
    """Model-ready inputs of one step plus their layout; `model_inputs` is adapter-specific."""

    layout: TokenLayout
    model_inputs: dict[str, Any]


@dataclass
class Trace:
    """What pass 1 captured, batch removed.

    prompt_rows: (L_sel, H, P, N) prompt->image rows at the relevance layers (attention mode).
    action_rows: (L, H, T, N) rows of the query that emitted each action token, every layer.
    H is 1 when the capture averaged heads as it recorded (DTP's own capture spec does).
    prompt_hidden / image_hidden: (L_sel, P, D) / (L_sel, N, D) in similarity mode.
    """

    prompt_rows: torch.Tensor | None
    action_rows: torch.Tensor
    prompt_hidden: torch.Tensor | None = None
    image_hidden: torch.Tensor | None = None
    capture_bytes: int = 0


@dataclass
class Pass1Cache:
    """What a pass 1 leaves for dtp.fast's reuse modes: its filled KV cache and prefill embeddings.

    A batched pass 1 shares one right-padded cache; `batch_index` names this sample's row in it.
    """

    cache: Any  # a transformers DynamicCache
    embeds: torch.Tensor  # (1, S, D) prefill embeddings of this sample
    batch_index: int | None = None


@dataclass
class Generation:
    """Result of one pass: action tokens (bins), their logits over the bins, optional trace.

    A continuous action head (pi0's flow-matching expert) has no tokens: its bins are empty (0,),
    its logits (0, 0), and `actions` holds the chunk it produced; `decode` then takes that chunk.
    """

    action_bins: torch.Tensor  # (T,) long in [0, 256)
    action_logits: torch.Tensor  # (T, bins) float32
    trace: Trace | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    actions: torch.Tensor | None = None  # (C, A) float32 chunk of a continuous head; None for token heads
    reuse: Pass1Cache | None = None  # set by adapters with supports_pass1_reuse (dtp.fast)

    @property
    def output(self) -> torch.Tensor:
        """What `adapter.decode` takes: the chunk of a continuous head, else the bins."""
        return self.actions if self.actions is not None else self.action_bins


@runtime_checkable
class VLAAdapter(Protocol):
    """The small protocol of DESIGN.md: prepare, generate (with keep mask / capture), decode.

    An adapter may also carry `default_relevance_layers` (tuple of ints or None): the layers
    DTPPolicy uses when DTPConfig.relevance_layers is None (the shipped TinyVLA stores its own),
    and `reset(seed)`, which DTPPolicy.reset calls at each episode (pi0 reseeds its noise there).
    `decode` takes `Generation.output`: the bins of a token head, the chunk of a continuous one.
    An adapter that batches sets `supports_batch = True` and implements
    `generate_batch(inputs, *, keeps=None, capture=False, relevance_layers=(), hidden_states=False)
    -> list[Generation]`: `generate` on each input (keeps[i] its keep mask; capture=True records DTP's
    rows for every sample) in one pass. Without it DTPPolicy.step_batch loops (dtp.batching).
    """

    num_layers: int

    def prepare(self, obs: Observation) -> PreparedInputs: ...

    def generate(
        self,
        inputs: PreparedInputs,
        *,
        keep: torch.Tensor | None = None,
        capture: CaptureSpec | None = None,
        relevance_layers: tuple[int, ...] = (),
        hidden_states: bool = False,
    ) -> Generation: ...

    def decode(self, action_bins: torch.Tensor) -> np.ndarray: ...


def declared_image_size(adapter: Any) -> int | None:
    """The square image size a model's config fixes (TinyVLA's `image_size`), else None (it resizes itself)."""
    size = getattr(getattr(getattr(adapter, "model", None), "config", None), "image_size", None)
    return size if isinstance(size, int) and not isinstance(size, bool) else None
