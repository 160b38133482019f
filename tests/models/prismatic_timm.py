"""A tiny random OpenVLA checkpoint in the published layout: timm-named DINOv2-reg4 + SigLIP towers,
the fused projector, a Llama, config.json / preprocessor_config.json / tokenizer beside model.safetensors.

Written from sizes alone (no timm needed): `timm_vit_state` lists timm 0.9's VisionTransformer
parameter names and shapes. test_openvla_timm.py loads the same tensors into the real timm
(strict=True), which checks that this layout is timm's.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

# The towers: sizes of the published ones scaled down (DINOv2 ViT-L/14 reg4, SigLIP So400m/14 at 224 px).
DINO = dict(width=32, depth=3, heads=4, mlp=128, patch=7, image=28, reg=4)
SIGLIP = dict(width=24, depth=3, heads=4, mlp=36, patch=7, image=28)
TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=512, pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
TIMM_IDS = ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"]
MEANS = [[0.484375, 0.455078125, 0.40625], [0.5, 0.5, 0.5]]
STDS = [[0.228515625, 0.2236328125, 0.224609375], [0.5, 0.5, 0.5]]
NORM_STATS = {"bridge_orig": {"action": {"q01": [-0.03, -0.04, -0.03, -0.1, -0.1, -0.2, 0.0],
                                         "q99": [0.03, 0.04, 0.03, 0.1, 0.1, 0.2, 1.0],
                                         "mask": [True] * 6 + [False]}}}


def timm_vit_state(prefix: str, width: int, depth: int, mlp: int, patch: int, image: int, reg: int = 0,
                   dinov2: bool = True, g: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Random weights under timm's VisionTransformer names: DINOv2-reg (class + register tokens, LayerScale
    saved as OpenVLA does, `scale_factor`; pos_embed without the class slot) or SigLIP (no class token, MAP head)."""
    d, n = width, (image // patch) ** 2

    def r(*shape, std=0.2, mean=0.0):
        return torch.randn(*shape, generator=g) * std + mean

    sd = {"patch_embed.proj.weight": r(d, 3, patch, patch, std=0.3), "patch_embed.proj.bias": r(d, std=0.1),
          "pos_embed": r(1, n, d, std=0.5)}
    if dinov2:
        sd["cls_token"] = r(1, 1, d, std=0.5)
        if reg:
            sd["reg_token"] = r(1, reg, d, std=0.5)
    for i in range(depth):
        b = f"blocks.{i}."
        sd |= {b + "norm1.weight": r(d, std=0.1, mean=1.0), b + "norm1.bias": r(d, std=0.1),
               b + "attn.qkv.weight": r(3 * d, d), b + "attn.qkv.bias": r(3 * d, std=0.1),
               b + "attn.proj.weight": r(d, d), b + "attn.proj.bias": r(d, std=0.1),
               b + "norm2.weight": r(d, std=0.1, mean=1.0), b + "norm2.bias": r(d, std=0.1),
               b + "mlp.fc1.weight": r(mlp, d), b + "mlp.fc1.bias": r(mlp, std=0.1),
               b + "mlp.fc2.weight": r(d, mlp), b + "mlp.fc2.bias": r(d, std=0.1)}
        if dinov2:
            sd |= {b + "ls1.scale_factor": r(d, std=0.3, mean=0.5), b + "ls2.scale_factor": r(d, std=0.3, mean=0.5)}
    sd |= {"norm.weight": r(d, std=0.1, mean=1.0), "norm.bias": r(d, std=0.1)}
    if not dinov2:  # timm's attention-pool head (global_pool="map"): in the checkpoint, never used by Prismatic
        sd |= {"attn_pool.latent": r(1, 1, d), "attn_pool.q.weight": r(d, d), "attn_pool.q.bias": r(d),
               "attn_pool.kv.weight": r(2 * d, d), "attn_pool.kv.bias": r(2 * d), "attn_pool.proj.weight": r(d, d),
               "attn_pool.proj.bias": r(d), "attn_pool.norm.weight": r(d), "attn_pool.norm.bias": r(d),
               "attn_pool.mlp.fc1.weight": r(mlp, d), "attn_pool.mlp.fc1.bias": r(mlp),
               "attn_pool.mlp.fc2.weight": r(d, mlp), "attn_pool.mlp.fc2.bias": r(d)}
    return {f"{prefix}.{k}": v for k, v in sd.items()}


def openvla_state(vocab_size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """The whole checkpoint's state dict: towers, projector (fused: 4 x D_vis hidden), language model."""
    g = torch.Generator().manual_seed(seed)
    sd = timm_vit_state("vision_backbone.featurizer", DINO["width"], DINO["depth"], DINO["mlp"], DINO["patch"],
                        DINO["image"], DINO["reg"], dinov2=True, g=g)
    sd |= timm_vit_state("vision_backbone.fused_featurizer", SIGLIP["width"], SIGLIP["depth"], SIGLIP["mlp"],
                         SIGLIP["patch"], SIGLIP["image"], dinov2=False, g=g)
    dv, h = DINO["width"] + SIGLIP["width"], TEXT["hidden_size"]
    for name, (o, i) in {"fc1": (4 * dv, dv), "fc2": (h, 4 * dv), "fc3": (h, h)}.items():
        sd[f"projector.{name}.weight"] = torch.randn(o, i, generator=g) * (1.0 / i ** 0.5)
        sd[f"projector.{name}.bias"] = torch.randn(o, generator=g) * 0.1
    torch.manual_seed(seed)
    lm = LlamaForCausalLM(LlamaConfig(vocab_size=vocab_size, **TEXT))
    sd |= {f"language_model.{k}": v for k, v in lm.state_dict().items()}
    return {k: v.contiguous() for k, v in sd.items()}


def openvla_config(vocab_size: int, pad_to_multiple_of: int = 64, norm_stats: dict | None = None) -> dict:
    """config.json as OpenVLA publishes it (field names and the towers' timm ids), tiny sizes."""
    return {
        "model_type": "openvla",
        "architectures": ["OpenVLAForActionPrediction"],
        "auto_map": {"AutoConfig": "configuration_prismatic.OpenVLAConfig",
                     "AutoModelForVision2Seq": "modeling_prismatic.OpenVLAForActionPrediction"},
        "vision_backbone_id": "dinosiglip-vit-so-224px",
        "llm_backbone_id": "llama2-7b-pure",
        "arch_specifier": "no-align+fused-gelu-mlp",
        "use_fused_vision_backbone": True,
        "timm_model_ids": TIMM_IDS,
        "timm_override_act_layers": [None, None],
        "image_sizes": [DINO["image"], SIGLIP["image"]],
        "image_resize_strategy": "resize-naive",
        "dtp_vision_num_heads": [DINO["heads"], SIGLIP["heads"]],  # tiny towers: not the published 16 heads
        "pad_to_multiple_of": pad_to_multiple_of,
        "pad_token_id": 0,
        "n_action_bins": 256,
        "norm_stats": norm_stats if norm_stats is not None else NORM_STATS,
        "text_config": {"model_type": "llama", "vocab_size": vocab_size, **TEXT},
        "torch_dtype": "float32",
    }


def preprocessor_config() -> dict:
    return {
        "image_processor_type": "PrismaticImageProcessor",
        "auto_map": {"AutoImageProcessor": "processing_prismatic.PrismaticImageProcessor",
                     "AutoProcessor": "processing_prismatic.PrismaticProcessor"},
        "use_fused_vision_backbone": True,
        "image_resize_strategy": "resize-naive",
        "input_sizes": [[3, DINO["image"], DINO["image"]], [3, SIGLIP["image"], SIGLIP["image"]]],
        "interpolations": ["bicubic", "bicubic"],
        "means": MEANS,
        "stds": STDS,
    }


def write_checkpoint(directory: str | Path, tokenizer, seed: int = 0, norm_stats: dict | None = None) -> Path:
    """Write the tiny timm-layout OpenVLA checkpoint; the vocabulary is the tokenizer's + 64 padding ids."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    vocab = len(tokenizer) + 64
    save_file(openvla_state(vocab, seed), str(d / "model.safetensors"), metadata={"format": "pt"})
    (d / "config.json").write_text(json.dumps(openvla_config(vocab, norm_stats=norm_stats), indent=1))
    (d / "preprocessor_config.json").write_text(json.dumps(preprocessor_config(), indent=1))
    tokenizer.save_pretrained(d)
    return d
