"""Tiny random VLMs built from configs (no hub), with real processors around tiny tokenizers.

Every model is float32, 2-3 layers, hidden 32, with a vision tower of a few patches, so a
full DTP step costs well under a second. Builders are plain functions (usable from a
script) and session fixtures wrap them (conftest.py). Test modules import them from here, never from
`conftest`: when several test folders run together, `conftest` may name another folder's module.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from dtp.models.base import Observation

logging.getLogger("transformers").setLevel(logging.ERROR)

WORDS = (
    "what action should the robot take to pick up red blue green block cube push open drawer close "
    "button press in out : ? . , user assistant"
).split()
INSTRUCTION = "pick up the red block"


def word_tokenizer(n_base: int = 320, extra_special: tuple[str, ...] = ()) -> PreTrainedTokenizerFast:
    """A word-level fast tokenizer: 4 specials, the robot words, fillers up to n_base ids."""
    vocab: dict[str, int] = {}
    for t in ("<pad>", "<bos>", "<eos>", "<unk>", *WORDS):
        vocab.setdefault(t, len(vocab))
    i = 0
    while len(vocab) < n_base:
        vocab[f"w{i}"] = len(vocab)
        i += 1
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.normalizer = normalizers.Lowercase()
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>", unk_token="<unk>"
    )
    if extra_special:
        tok.add_special_tokens({"additional_special_tokens": list(extra_special)})
    return tok


def observation(seed: int = 0, h: int = 60, w: int = 80) -> Observation:
    img = np.random.RandomState(seed).randint(0, 256, (h, w, 3), dtype=np.uint8)
    return Observation(image=img, instruction=INSTRUCTION)


@dataclass
class Tiny:
    """A tiny model, its processor, the adapter kwargs tests should use, and facts for assertions."""

    name: str
    model: Any
    processor: Any
    adapter_kwargs: dict = field(default_factory=dict)
    eager: Any = None  # same weights with eager attention (the reference for captured rows)


def _eager_copy(model, build):
    ref = build()
    ref.load_state_dict(model.state_dict())
    ref.set_attn_implementation("eager")
    if hasattr(ref, "vision_backbone"):  # the Prismatic stand-in does not pass it down
        ref.language_model.set_attn_implementation("eager")
    return ref.eval()


# -- PaliGemma2 (SigLIP + Gemma2) -------------------------------------------------------------
def tiny_paligemma2(sliding_window: int = 512, seed: int = 0) -> Tiny:
    from transformers import PaliGemmaConfig, PaliGemmaForConditionalGeneration, PaliGemmaProcessor
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    tok = word_tokenizer()
    ip = SiglipImageProcessorPil(size={"height": 48, "width": 48})
    ip.image_seq_length = 36  # (48 / 8) ** 2
    proc = PaliGemmaProcessor(image_processor=ip, tokenizer=tok)
    cfg = PaliGemmaConfig(
        text_config=dict(
            model_type="gemma2",
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=3,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=16,
            sliding_window=sliding_window,
            max_position_embeddings=512,
            attn_logit_softcapping=2.0,  # small, so the cap changes the scores measurably
            final_logit_softcapping=30.0,
            query_pre_attn_scalar=16,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
        ),
        vision_config=dict(
            image_size=48, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            projection_dim=32,
        ),
        image_token_id=proc.image_token_id,
        projection_dim=32,
        pad_token_id=0,
    )

    def build():
        torch.manual_seed(seed)
        return PaliGemmaForConditionalGeneration(copy.deepcopy(cfg)).eval()

    model = build()
    return Tiny("paligemma2", model, proc, eager=_eager_copy(model, build))


# -- Qwen2.5-VL ----------------------------------------------------------------------------------
QWEN_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
QWEN_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ c['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _qwen_processor(tok, ip):
    from transformers import Qwen2_5_VLProcessor

    class NoVideoQwenProcessor(Qwen2_5_VLProcessor):
        """Qwen2_5_VLProcessor without its video processor (that one needs torchvision, absent here)."""

        def check_argument_for_proper_class(self, argument_name, argument):
            if argument is None:
                return None
            return super().check_argument_for_proper_class(argument_name, argument)

    return NoVideoQwenProcessor(image_processor=ip, tokenizer=tok, chat_template=QWEN_CHAT_TEMPLATE)


def tiny_qwen2_5_vl(seed: int = 0) -> Tiny:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tok = word_tokenizer(extra_special=QWEN_SPECIALS)
    ip = Qwen2VLImageProcessorPil(min_pixels=48 * 48, max_pixels=48 * 48, patch_size=4, merge_size=2, temporal_patch_size=2)
    proc = _qwen_processor(tok, ip)
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_SPECIALS}
    cfg = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1]},
            bos_token_id=ids["<|endoftext|>"],
            eos_token_id=ids["<|im_end|>"],
            pad_token_id=0,
        ),
        vision_config=dict(
            depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=4, spatial_merge_size=2,
            temporal_patch_size=2, window_size=16, out_hidden_size=32, fullatt_block_indexes=[1],
        ),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )

    def build():
        torch.manual_seed(seed)
        return Qwen2_5_VLForConditionalGeneration(copy.deepcopy(cfg)).eval()

    model = build()
    # Qwen's last vocabulary ids are special tokens, as in the real model: the default bins refuse
    # to apply, so tests give an explicit action scheme (as Nora's FAST decoder would).
    action_ids = list(range(40, 296))
    kwargs = dict(action_token_ids=action_ids)
    return Tiny("qwen2_5_vl", model, proc, adapter_kwargs=kwargs, eager=_eager_copy(model, build))


# -- LLaVA (CLIP + Llama) ------------------------------------------------------------------------
def tiny_llava(seed: int = 0) -> Tiny:
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    tok = word_tokenizer(extra_special=("<image>",))
    ip = CLIPImageProcessorPil(size={"shortest_edge": 40}, crop_size={"height": 40, "width": 40})
    proc = LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=8, vision_feature_select_strategy="default",
                          num_additional_image_tokens=1)
    cfg = LlavaConfig(
        text_config=dict(
            model_type="llama", vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, pad_token_id=0,
            bos_token_id=1, eos_token_id=2,
        ),
        vision_config=dict(
            model_type="clip_vision_model", image_size=40, patch_size=8, hidden_size=32, intermediate_size=64,
            num_hidden_layers=2, num_attention_heads=2, projection_dim=32,
        ),
        image_token_id=proc.image_token_id,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )

    def build():
        torch.manual_seed(seed)
        return LlavaForConditionalGeneration(copy.deepcopy(cfg)).eval()

    model = build()
    return Tiny("llava", model, proc, eager=_eager_copy(model, build))


# -- Gemma3 (SigLIP + Gemma3, bidirectional image block, sliding layers) ---------------------------
def tiny_gemma3(seed: int = 0) -> Tiny:
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3Processor
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    base = word_tokenizer(extra_special=("<start_of_image>", "<end_of_image>", "<image_soft_token>"))
    tok = PreTrainedTokenizerFast(
        tokenizer_object=base._tokenizer, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>", unk_token="<unk>",
        extra_special_tokens={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"},
    )
    ip = Gemma3ImageProcessorPil(size={"height": 32, "width": 32}, do_pan_and_scan=False)
    proc = Gemma3Processor(image_processor=ip, tokenizer=tok, image_seq_length=16)
    cfg = Gemma3Config(
        text_config=dict(
            vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
            num_key_value_heads=1, head_dim=16, sliding_window=512, max_position_embeddings=512, query_pre_attn_scalar=16,
            pad_token_id=0, bos_token_id=1, eos_token_id=2,
        ),
        vision_config=dict(image_size=32, patch_size=4, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2),
        mm_tokens_per_image=16,
        image_token_id=tok.convert_tokens_to_ids("<image_soft_token>"),
        boi_token_id=tok.convert_tokens_to_ids("<start_of_image>"),
        eoi_token_id=tok.convert_tokens_to_ids("<end_of_image>"),
    )

    def build():
        torch.manual_seed(seed)
        return Gemma3ForConditionalGeneration(copy.deepcopy(cfg)).eval()

    model = build()
    return Tiny("gemma3", model, proc, eager=_eager_copy(model, build))


# -- Idefics3 (SmolVLM's structure; image splitting off) ------------------------------------------
def tiny_idefics3(seed: int = 0) -> Tiny:
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    tok = word_tokenizer(extra_special=("<global-img>",))
    ip = Idefics3ImageProcessorPil(do_image_splitting=False, size={"longest_edge": 32}, max_image_size={"longest_edge": 32})
    proc = Idefics3Processor(image_processor=ip, tokenizer=tok, image_seq_len=16)  # (32/4)^2 / 2^2
    cfg = Idefics3Config(
        text_config=dict(
            model_type="llama", vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, pad_token_id=0, bos_token_id=1,
            eos_token_id=2,
        ),
        vision_config=dict(image_size=32, patch_size=4, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2),
        scale_factor=2,
        image_token_id=proc.image_token_id,
    )

    def build():
        torch.manual_seed(seed)
        return Idefics3ForConditionalGeneration(copy.deepcopy(cfg)).eval()

    model = build()
    return Tiny("idefics3", model, proc, eager=_eager_copy(model, build))


# -- OpenVLA-style (Prismatic layout: vision_backbone, projector, Llama) --------------------------
def tiny_openvla(seed: int = 0, norm_stats: dict | None = None) -> Tiny:
    from tiny_prismatic import TinyPrismatic, TinyPrismaticConfig, TinyPrismaticProcessor

    tok = word_tokenizer()
    proc = TinyPrismaticProcessor(tok, image_size=32)
    cfg = TinyPrismaticConfig(
        text_config=dict(
            vocab_size=len(tok) + 64, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=512, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        ),
        pad_to_multiple_of=64,
        norm_stats=norm_stats,
    )

    def build():
        torch.manual_seed(seed)
        return TinyPrismatic(copy.deepcopy(cfg)).eval()

    model = build()
    model.language_model.set_attn_implementation("sdpa")
    return Tiny("openvla", model, proc, eager=_eager_copy(model, build))
