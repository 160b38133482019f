"""TinyVLAConfig: the sizes of TinyVLA, apart from the model (`modeling.py`) so that reading them, as
the training command line does for its flags, imports neither torch nor transformers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import LlamaConfig

__all__ = ["TinyVLAConfig", "MODEL_TYPE"]

MODEL_TYPE = "dtp-tinyvla"


@dataclass
class TinyVLAConfig:
    """Sizes of the encoder, projector and language model. The vocabulary is words + action bins."""

    image_size: int = 96
    patch_size: int = 12
    vision_width: int = 96
    hidden_size: int = 160
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int | None = None  # None: one key/value head per attention head
    intermediate_size: int = 448
    num_words: int = 64  # word tokens incl. specials (pad=0, bos=1, unk=2)
    action_dims: int = 4
    action_bins: int = 256
    proprio_dims: int = 4
    max_positions: int = 256
    num_registers: int = 0  # learned tokens after the image span (0: the shipped model's layout)
    # proprio standardised by these (training data's mean and std per dimension) before its projection;
    # None: read as given (the Meta-World models). LIBERO's gripper opening moves by ~0.006, its
    # end-effector by ~0.1: unscaled, the projection barely sees the gripper.
    proprio_mean: list[float] | None = None
    proprio_std: list[float] | None = None
    model_type: str = MODEL_TYPE
    extra: dict = field(default_factory=dict)

    @property
    def grid(self) -> tuple[int, int]:
        n = self.image_size // self.patch_size
        return (n, n)

    @property
    def num_image_tokens(self) -> int:
        h, w = self.grid
        return h * w

    @property
    def text_start(self) -> int:
        """Sequence position of the first instruction word: after BOS, the image and the registers."""
        return 1 + self.num_image_tokens + self.num_registers

    @property
    def vocab_size(self) -> int:
        return self.num_words + self.action_bins

    def llama_config(self) -> LlamaConfig:
        from transformers import LlamaConfig

        cfg = LlamaConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_kv_heads or self.num_heads,
            max_position_embeddings=self.max_positions,
            bos_token_id=1,
            eos_token_id=None,
            pad_token_id=0,
            tie_word_embeddings=False,
        )
        cfg._attn_implementation_internal = "sdpa"
        return cfg
