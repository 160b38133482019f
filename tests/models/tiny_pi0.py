"""A tiny random pi0 (transformers' PI0ForConditionalGeneration) and its PI0Processor, built from configs.

PaliGemma prefix (SigLIP 32 px / 8 px patches = 16 image tokens, Gemma 3 layers, hidden 32) and a
Gemma action expert (3 layers, hidden 16, same head_dim and one KV head, so it can read the prefix
cache), chunk of 5 actions over 8 dims, 3 denoising steps. The processor pads the text to 48
tokens, so the prefix ends with padding (0 in the attention mask), as short prompts do in pi0.
The processor comes from dtp.models.pi0.pi0_processor (SigLIP's PIL image processor: PI0's own needs torchvision).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from tiny_models import INSTRUCTION, Tiny, word_tokenizer

from dtp.models.base import Observation

STATE_DIM = 4
ACTION_DIM = 4
CHUNK = 5
STEPS = 3


def pi0_processor(*, stats: bool = True):
    from dtp.models.pi0 import pi0_processor as build

    kw = {}
    if stats:
        kw = dict(
            state_mean=[0.1, -0.2, 0.0, 0.3], state_std=[1.0, 2.0, 0.5, 1.0],
            actions_mean=[0.5, -0.5, 0.0, 1.0], actions_std=[2.0, 1.0, 0.1, 3.0],
        )
    return build(word_tokenizer(), image_size=32, patch_size=8, max_state_dim=8, chunk_size=CHUNK, **kw)


def tiny_pi0(seed: int = 0) -> Tiny:
    from transformers import PI0Config, PI0ForConditionalGeneration

    proc = pi0_processor()
    cfg = PI0Config(
        vlm_config=dict(
            model_type="paligemma",
            text_config=dict(
                model_type="gemma", vocab_size=len(proc.tokenizer), hidden_size=32, intermediate_size=64,
                num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=1, head_dim=16,
            ),
            vision_config=dict(
                model_type="siglip_vision_model", image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
                num_hidden_layers=2, num_attention_heads=2, vision_use_head=False,
            ),
            projection_dim=32,
            image_token_id=proc.image_token_id,
        ),
        dit_config=dict(
            model_type="gemma", hidden_size=16, intermediate_size=32, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=1, head_dim=16,
        ),
        chunk_size=CHUNK,
        max_state_dim=8,
        max_action_dim=8,
        num_inference_steps=STEPS,
    )

    def build():
        torch.manual_seed(seed)
        return PI0ForConditionalGeneration(copy.deepcopy(cfg)).eval()

    model = build()
    eager = build()
    eager.load_state_dict(model.state_dict())
    eager.set_attn_implementation("eager")
    return Tiny("pi0", model, proc, eager=eager)


def pi0_observation(seed: int = 0) -> Observation:
    rng = np.random.RandomState(seed)
    img = rng.randint(0, 256, (60, 80, 3), dtype=np.uint8)
    return Observation(image=img, instruction=INSTRUCTION, proprio=rng.uniform(-1, 1, STATE_DIM).astype(np.float32))
