"""OpenVLA without its remote code: transformers' own DINOv2 + SigLIP towers, the fused MLP projector
and LlamaForCausalLM, loaded from the checkpoint's timm-named weights.

Why: OpenVLA's `modeling_prismatic.py` is pinned to transformers 4.40 and timm 0.9.x; under
transformers >= 4.50 it loads and then ignores the image (openvla/openvla #346, a constant action).
This module rebuilds the same computation from classes transformers ships:

    pixel_values (B, 6, H, W) = [DINOv2-normalised RGB ; SigLIP-normalised RGB] (channel-stacked)
      featurizer        Dinov2WithRegistersModel   timm `vit_large_patch14_reg4_dinov2`
      fused_featurizer  SiglipVisionModel          timm `vit_so400m_patch14_siglip_224`
    each tower's SECOND-TO-LAST block output, prefix tokens (class, registers) dropped: (B, N, D_i)
    concatenated along channels -> (B, N, D_1 + D_2) -> projector fc1 -> GELU -> fc2 -> GELU -> fc3
    -> (B, N, D) patch embeddings, spliced after BOS into LlamaForCausalLM's input embeddings.

Prismatic takes timm's `get_intermediate_layers(n={depth - 2})`, so the last block, the final norm
and SigLIP's attention-pool head never influence an action; the towers here are built with depth - 1
blocks and those weights are skipped (listed in `UNUSED_TIMM_KEYS`). timm's ViT uses exact GELU
(not SigLIP's usual tanh form) and LayerNorm eps 1e-6; DINOv2-reg4 adds no position embedding to the
class and register tokens (timm `no_embed_class=True`), so that slot of transformers' table is zero.

Weight names (the checkpoint's, timm layout; OpenVLA renames LayerScale `gamma` to `scale_factor`):

    vision_backbone.{featurizer,fused_featurizer}.patch_embed.proj.{weight,bias}, pos_embed,
        cls_token, reg_token, blocks.{i}.{norm1,attn.qkv,attn.proj,ls1,norm2,mlp.fc1,mlp.fc2,ls2}.*,
        norm.*, attn_pool.*
    projector.{fc1,fc2,fc3}.{weight,bias}
    language_model.{model.*,lm_head.weight}

The image side (`PrismaticInputs`, in `prismatic_inputs.py`) follows PrismaticImageProcessor's timm/torchvision transform on PIL
images (resize with bicubic, centre crop, to [0, 1], normalise per tower, stack channels), and the
text side is the checkpoint's own (Llama) tokenizer through AutoTokenizer.

Tower hyper-parameters come from the weights (width, depth, MLP width, patch size, registers) and the
config (`image_sizes`); the head count is not in the weights: it comes from `KNOWN_TOWERS` for the
published timm ids, or from the config key `dtp_vision_num_heads` (one per tower) when set.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError, ConfigError, UnsupportedModelError
from .openvla import OpenVLAAdapter, OpenVLABins, _action_stats
from .prismatic_inputs import PrismaticInputs

__all__ = [
    "KNOWN_TOWERS",
    "UNUSED_TIMM_KEYS",
    "NativeOpenVLAConfig",
    "PrismaticVision",
    "PrismaticProjector",
    "NativeOpenVLA",
    "PrismaticInputs",
    "map_checkpoint",
    "load_openvla_native",
]

log = logging.getLogger(__name__)

# timm model id -> (family, attention heads). Widths and depths come from the weights.
KNOWN_TOWERS: dict[str, tuple[str, int]] = {
    "vit_large_patch14_reg4_dinov2.lvd142m": ("dinov2", 16),
    "vit_large_patch14_reg4_dinov2": ("dinov2", 16),
    "vit_so400m_patch14_siglip_224": ("siglip", 16),
    "vit_so400m_patch14_siglip_384": ("siglip", 16),
}
# Weights of a tower that never reach the output (Prismatic reads the second-to-last block).
UNUSED_TIMM_KEYS = ("blocks.{last}.", "norm.", "attn_pool.", "head.", "fc_norm.")
EMPTY_TOKEN_ID = 29871  # Llama 2's "▁", which OpenVLA's predict_action appends after "Out:"


# -- config -------------------------------------------------------------------------------------


@dataclass
class TowerSpec:
    """One vision tower: family ("dinov2" | "siglip"), sizes read from the weights, heads from KNOWN_TOWERS/config."""

    family: str
    width: int
    depth: int  # blocks in the checkpoint; depth - 1 are run
    heads: int
    mlp_width: int
    patch_size: int
    image_size: int
    register_tokens: int = 0
    class_token: bool = False
    layerscale: bool = False


@dataclass
class NativeOpenVLAConfig:
    """What the adapter and the model read: the text config, action statistics and bins, the towers."""

    text_config: Any
    towers: list[TowerSpec]
    norm_stats: dict | None = None
    n_action_bins: int = 256
    pad_to_multiple_of: int = 0
    raw: dict = field(default_factory=dict)

    @property
    def use_fused_vision_backbone(self) -> bool:
        return len(self.towers) == 2


def _tower_spec(timm_id: str, prefix: str, shapes: dict[str, tuple[int, ...]], image_size: int, heads: int | None) -> TowerSpec:
    family = None
    known = KNOWN_TOWERS.get(timm_id)
    if known is not None:
        family, known_heads = known
        heads = heads or known_heads
    elif "dinov2" in timm_id:
        family = "dinov2"
    elif "siglip" in timm_id:
        family = "siglip"
    if family is None:
        raise UnsupportedModelError(
            f"vision tower {timm_id!r} is not supported by the native OpenVLA loader (DINOv2 and SigLIP are); "
            "load it with trust_remote_code=True"
        )
    if heads is None:
        raise CheckpointError(f"the head count of tower {timm_id!r} is unknown; set dtp_vision_num_heads in config.json")

    def shape(name: str) -> tuple[int, ...]:
        key = f"{prefix}.{name}"
        if key not in shapes:
            raise CheckpointError(f"the checkpoint lacks {key} (timm layout expected for {timm_id})")
        return shapes[key]

    width, _, patch, _ = shape("patch_embed.proj.weight")
    depth = 1 + max(int(k[len(prefix) + 8:].split(".")[0]) for k in shapes if k.startswith(f"{prefix}.blocks."))
    if depth < 2:
        raise CheckpointError(f"{prefix} has {depth} block; Prismatic reads the second-to-last, so at least 2 are needed")
    spec = TowerSpec(
        family=family,
        width=width,
        depth=depth,
        heads=int(heads),
        mlp_width=shape("blocks.0.mlp.fc1.weight")[0],
        patch_size=patch,
        image_size=int(image_size),
        register_tokens=shapes.get(f"{prefix}.reg_token", (1, 0, width))[1],
        class_token=f"{prefix}.cls_token" in shapes,
        layerscale=any(f"{prefix}.blocks.0.ls1.{n}" in shapes for n in ("scale_factor", "gamma")),
    )
    n_patches = (spec.image_size // spec.patch_size) ** 2
    pos = shape("pos_embed")
    if pos[1] not in (n_patches, n_patches + int(spec.class_token)):
        raise CheckpointError(
            f"{prefix}.pos_embed has {pos[1]} positions; image size {spec.image_size} in {spec.patch_size} px patches "
            f"needs {n_patches}"
        )
    if spec.width % spec.heads:
        raise CheckpointError(f"{prefix}: width {spec.width} is not divisible by {spec.heads} heads")
    if family == "dinov2" and not spec.class_token:
        raise CheckpointError(f"{prefix}: a DINOv2 tower without a class token is not supported")
    if family == "siglip" and (spec.class_token or spec.register_tokens or spec.layerscale):
        raise CheckpointError(f"{prefix}: a SigLIP tower has no class/register tokens or LayerScale in timm")
    return spec


def native_config(cfg: dict, shapes: dict[str, tuple[int, ...]]) -> NativeOpenVLAConfig:
    """NativeOpenVLAConfig from an OpenVLA config.json dict and the checkpoint's weight shapes."""
    from transformers import LlamaConfig

    ids = cfg.get("timm_model_ids")
    sizes = cfg.get("image_sizes")
    if not ids or not sizes or len(ids) != len(sizes) or len(ids) > 2:
        raise CheckpointError(
            f"config.json needs timm_model_ids and image_sizes of one or two towers (got {ids!r}, {sizes!r})"
        )
    acts = cfg.get("timm_override_act_layers") or [None] * len(ids)
    if any(a is not None for a in acts):
        raise UnsupportedModelError(f"timm_override_act_layers {acts} (e.g. CLIP's quick_gelu) is not supported natively")
    heads = cfg.get("dtp_vision_num_heads") or [None] * len(ids)
    prefixes = ["vision_backbone.featurizer", "vision_backbone.fused_featurizer"][: len(ids)]
    towers = [_tower_spec(i, p, shapes, s, h) for i, p, s, h in zip(ids, prefixes, sizes, heads)]
    text = cfg.get("text_config")
    if not isinstance(text, dict) or text.get("model_type", "llama") != "llama":
        raise UnsupportedModelError(f"the native OpenVLA loader builds a Llama language model; text_config is {text!r:.80}")
    text_config = LlamaConfig(**{k: v for k, v in text.items() if k != "model_type"})
    return NativeOpenVLAConfig(
        text_config=text_config,
        towers=towers,
        norm_stats=cfg.get("norm_stats"),
        n_action_bins=int(cfg.get("n_action_bins", 256)),
        pad_to_multiple_of=int(cfg.get("pad_to_multiple_of", 0) or 0),
        raw=cfg,
    )


# -- modules ------------------------------------------------------------------------------------


def _build_tower(spec: TowerSpec) -> nn.Module:
    """A transformers vision model with depth - 1 blocks (the last one is never read)."""
    common = dict(
        hidden_size=spec.width,
        num_hidden_layers=spec.depth - 1,
        num_attention_heads=spec.heads,
        image_size=spec.image_size,
        patch_size=spec.patch_size,
        num_channels=3,
        hidden_act="gelu",  # timm's ViT: exact GELU
        layer_norm_eps=1e-6,
        attn_implementation="sdpa",
    )
    if spec.family == "dinov2":
        from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel

        if spec.mlp_width % spec.width:  # transformers' config holds an integer mlp_ratio
            raise CheckpointError(f"DINOv2 MLP width {spec.mlp_width} is not a multiple of the width {spec.width}")
        cfg = Dinov2WithRegistersConfig(
            **common, mlp_ratio=spec.mlp_width // spec.width, num_register_tokens=spec.register_tokens, qkv_bias=True,
            layerscale_value=1.0,
        )
        return Dinov2WithRegistersModel(cfg)
    from transformers import SiglipVisionConfig, SiglipVisionModel

    return SiglipVisionModel(SiglipVisionConfig(**common, intermediate_size=spec.mlp_width, vision_use_head=False))


class PrismaticVision(nn.Module):
    """(B, 3 * towers, H, W) -> (B, N, sum of tower widths): each tower's second-to-last block, patches only."""

    def __init__(self, towers: list[TowerSpec]):
        super().__init__()
        self.specs = towers
        self.featurizer = _build_tower(towers[0])
        self.fused_featurizer = _build_tower(towers[1]) if len(towers) == 2 else None
        self.embed_dim = sum(t.width for t in towers)

    @staticmethod
    def _patches(tower: nn.Module, spec: TowerSpec, pixels: torch.Tensor) -> torch.Tensor:
        out = tower(pixel_values=pixels, output_hidden_states=True)
        h = out.hidden_states[-1]  # (B, prefix + N, D): output of block depth - 2, before the final norm
        return h[:, int(spec.class_token) + spec.register_tokens:]

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if self.fused_featurizer is None:
            return self._patches(self.featurizer, self.specs[0], pixel_values)
        img, img_fused = torch.split(pixel_values, [3, 3], dim=1)
        a = self._patches(self.featurizer, self.specs[0], img)  # (B, N, D_1)
        b = self._patches(self.fused_featurizer, self.specs[1], img_fused)  # (B, N, D_2)
        return torch.cat([a, b], dim=2)


class PrismaticProjector(nn.Module):
    """Prismatic's MLP projector: fused towers fc1 (D_vis -> 4 D_vis) GELU fc2 (-> D) GELU fc3; else fc1 GELU fc2."""

    def __init__(self, fused: bool, vision_dim: int, llm_dim: int):
        super().__init__()
        self.fused = fused
        if fused:
            self.fc1 = nn.Linear(vision_dim, 4 * vision_dim)
            self.fc2 = nn.Linear(4 * vision_dim, llm_dim)
            self.fc3 = nn.Linear(llm_dim, llm_dim)
        else:
            self.fc1 = nn.Linear(vision_dim, llm_dim)
            self.fc2 = nn.Linear(llm_dim, llm_dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc2(self.act(self.fc1(x)))
        return self.fc3(self.act(x)) if self.fused else x


class NativeOpenVLA(nn.Module):
    """vision_backbone, projector, language_model (LlamaForCausalLM): the Prismatic layout OpenVLAAdapter wraps."""

    def __init__(self, config: NativeOpenVLAConfig):
        super().__init__()
        from transformers import LlamaForCausalLM

        self.config = config
        self.vision_backbone = PrismaticVision(config.towers)
        self.projector = PrismaticProjector(config.use_fused_vision_backbone, self.vision_backbone.embed_dim,
                                            config.text_config.hidden_size)
        config.text_config._attn_implementation_internal = "sdpa"
        self.language_model = LlamaForCausalLM(config.text_config)

    def multimodal_embeddings(self, input_ids: torch.Tensor, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 1 + N + P, D): [BOS] [projected patches x N] [the rest of input_ids], as Prismatic's forward."""
        patches = self.projector(self.vision_backbone(pixel_values))  # (B, N, D)
        words = self.language_model.get_input_embeddings()(input_ids)  # (B, 1 + P, D)
        return torch.cat([words[:, :1], patches.to(words.dtype), words[:, 1:]], dim=1)

    @torch.inference_mode()
    def predict_action(self, input_ids: torch.Tensor, pixel_values: torch.Tensor, unnorm_key: str | None = None,
                       empty_token_id: int = EMPTY_TOKEN_ID) -> np.ndarray:
        """OpenVLA's predict_action: append the empty token when missing, greedy over the whole vocabulary for
        as many tokens as the action has dimensions, then bins -> [-1, 1] -> the dataset's scale (q01, q99, mask)."""
        stats, _ = _action_stats(self.config, unnorm_key)
        if stats is None:
            raise ConfigError("this checkpoint has no norm_stats; predict_action needs them to size and scale the action")
        if not bool(torch.all(input_ids[:, -1] == empty_token_id)):
            input_ids = torch.cat([input_ids, torch.full((input_ids.shape[0], 1), empty_token_id, device=input_ids.device)], 1)
        n = len(stats["q01"])
        embeds = self.multimodal_embeddings(input_ids, pixel_values)
        out = self.language_model.generate(inputs_embeds=embeds, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                           attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device))
        ids = out[0, -n:].cpu().numpy()
        vocab = int(self.config.text_config.vocab_size) - self.config.pad_to_multiple_of
        bins = OpenVLABins(vocab_size=vocab, n_bins=self.config.n_action_bins, q01=tuple(stats["q01"]),
                           q99=tuple(stats["q99"]), mask=tuple(stats.get("mask", [True] * n)))
        return bins(ids)


# -- weights --------------------------------------------------------------------------------------


def _map_tower(src: str, dst: str, spec: TowerSpec, sd: dict[str, torch.Tensor], out: dict[str, torch.Tensor]) -> set[str]:
    """Write tower weights under transformers names into `out`; returns the source keys consumed."""
    used: set[str] = set()

    def take(name: str) -> torch.Tensor:
        key = f"{src}.{name}"
        if key not in sd:
            raise CheckpointError(f"the checkpoint lacks {key}")
        used.add(key)
        return sd[key]

    d = spec.width
    dino = spec.family == "dinov2"
    if dino:
        out[f"{dst}.embeddings.cls_token"] = take("cls_token")
        if spec.register_tokens:
            out[f"{dst}.embeddings.register_tokens"] = take("reg_token")
        pos = take("pos_embed")  # (1, N, D) with timm's no_embed_class, else (1, 1 + N, D)
        if pos.shape[1] == (spec.image_size // spec.patch_size) ** 2:
            pos = torch.cat([torch.zeros_like(pos[:, :1]), pos], dim=1)  # the class token gets no position
        out[f"{dst}.embeddings.position_embeddings"] = pos
        out[f"{dst}.embeddings.mask_token"] = torch.zeros(1, d, dtype=pos.dtype)  # unused at inference
        out[f"{dst}.embeddings.patch_embeddings.projection.weight"] = take("patch_embed.proj.weight")
        out[f"{dst}.embeddings.patch_embeddings.projection.bias"] = take("patch_embed.proj.bias")
        layer, attn, o, n1, n2 = "encoder.layer", "attention", "attention.o_proj", "norm1", "norm2"
    else:
        out[f"{dst}.embeddings.position_embedding.weight"] = take("pos_embed")[0]
        out[f"{dst}.embeddings.patch_embedding.weight"] = take("patch_embed.proj.weight")
        out[f"{dst}.embeddings.patch_embedding.bias"] = take("patch_embed.proj.bias")
        layer, attn, o, n1, n2 = "encoder.layers", "self_attn", "self_attn.out_proj", "layer_norm1", "layer_norm2"
    for i in range(spec.depth - 1):
        b, t = f"blocks.{i}", f"{dst}.{layer}.{i}"
        for a, h in ((n1, "norm1"), (n2, "norm2")):
            out[f"{t}.{a}.weight"], out[f"{t}.{a}.bias"] = take(f"{b}.{h}.weight"), take(f"{b}.{h}.bias")
        qw, kw, vw = take(f"{b}.attn.qkv.weight").chunk(3, dim=0)  # (3 D, D) -> q, k, v
        qb, kb, vb = take(f"{b}.attn.qkv.bias").chunk(3, dim=0)
        for name, w, bias in (("q_proj", qw, qb), ("k_proj", kw, kb), ("v_proj", vw, vb)):
            out[f"{t}.{attn}.{name}.weight"], out[f"{t}.{attn}.{name}.bias"] = w.contiguous(), bias.contiguous()
        out[f"{t}.{o}.weight"], out[f"{t}.{o}.bias"] = take(f"{b}.attn.proj.weight"), take(f"{b}.attn.proj.bias")
        for fc in ("fc1", "fc2"):
            out[f"{t}.mlp.{fc}.weight"], out[f"{t}.mlp.{fc}.bias"] = take(f"{b}.mlp.{fc}.weight"), take(f"{b}.mlp.{fc}.bias")
        if spec.layerscale:
            for k in (1, 2):
                gamma = next(n for n in ("scale_factor", "gamma") if f"{src}.{b}.ls{k}.{n}" in sd)
                out[f"{t}.layer_scale{k}.lambda1"] = take(f"{b}.ls{k}.{gamma}")
    # the final norm is not applied to the second-to-last block's output, but transformers' model holds one
    final = "layernorm" if dino else "post_layernorm"
    out[f"{dst}.{final}.weight"] = torch.ones(d, dtype=sd[f"{src}.pos_embed"].dtype)
    out[f"{dst}.{final}.bias"] = torch.zeros(d, dtype=sd[f"{src}.pos_embed"].dtype)
    return used


def _is_unused(key: str, src: str, spec: TowerSpec) -> bool:
    rest = key[len(src) + 1:]
    return any(rest.startswith(p.format(last=spec.depth - 1)) for p in UNUSED_TIMM_KEYS)


def map_checkpoint(sd: dict[str, torch.Tensor], config: NativeOpenVLAConfig) -> dict[str, torch.Tensor]:
    """The checkpoint's state dict (timm names) -> NativeOpenVLA's; every source key is consumed or known unused."""
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    pairs = [("vision_backbone.featurizer", "vision_backbone.featurizer"),
             ("vision_backbone.fused_featurizer", "vision_backbone.fused_featurizer")][: len(config.towers)]
    for (src, dst), spec in zip(pairs, config.towers):
        used |= _map_tower(src, dst, spec, sd, out)
        used |= {k for k in sd if k.startswith(src + ".") and _is_unused(k, src, spec)}
    for k, v in sd.items():
        if k.startswith(("projector.", "language_model.")):
            out[k] = v
            used.add(k)
    left = sorted(set(sd) - used)
    if left:
        raise CheckpointError(f"{len(left)} checkpoint weights have no place in the native OpenVLA model: {left[:5]}")
    return out


# -- loading --------------------------------------------------------------------------------------


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{path} holds no .safetensors weights (pickled .bin checkpoints are not loaded)")
    sd: dict[str, torch.Tensor] = {}
    for f in files:
        sd.update(load_file(str(f)))
    return sd


def _materialize_buffers(model: nn.Module) -> None:
    """Compute the non-persistent buffers (RoPE frequencies, position ids) that a meta-device build left empty.

    Each module holding one is rebuilt on the CPU from its own config (these modules are small) and its
    buffers are taken over; they keep the dtype their module gives them (RoPE's stay float32)."""
    for name, module in model.named_modules():
        meta = [b for b, t in module.named_buffers(recurse=False) if t is not None and t.is_meta]
        if not meta:
            continue
        cfg = getattr(module, "config", None)
        if cfg is None:
            raise CheckpointError(f"cannot compute the buffers {meta} of {name} ({type(module).__name__}): it has no config")
        with torch.device("cpu"):
            fresh = type(module)(cfg)
        for b in meta:
            module._buffers[b] = fresh._buffers[b]
    left = [n for n, t in model.named_buffers() if t.is_meta] + [n for n, t in model.named_parameters() if t.is_meta]
    if left:
        raise CheckpointError(f"tensors left without values after loading: {left[:5]}")


def build_native_openvla(path: str | Path, dtype: torch.dtype | str | None = None) -> tuple[NativeOpenVLA, PrismaticInputs]:
    """(NativeOpenVLA in eval mode with the checkpoint's weights, its inputs processor); nothing is downloaded."""
    path = Path(path)
    cfg = json.loads((path / "config.json").read_text())
    sd = _read_state(path)
    config = native_config(cfg, {k: tuple(v.shape) for k, v in sd.items()})
    mapped = map_checkpoint(sd, config)
    if dtype in (None, "auto"):  # the checkpoint's own
        dtype = mapped["language_model.lm_head.weight"].dtype if "language_model.lm_head.weight" in mapped else torch.float32
    elif isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    with torch.device("meta"):  # no memory and no random init: a 7B model is never held twice
        model = NativeOpenVLA(config)
    want = set(model.state_dict())
    missing, extra = sorted(want - set(mapped)), sorted(set(mapped) - want)
    if missing or extra:
        raise CheckpointError(f"weight mapping mismatch: missing {missing[:5]}, unexpected {extra[:5]}")
    mapped = {k: v.to(dtype) for k, v in mapped.items()}
    try:
        model.load_state_dict(mapped, strict=True, assign=True)
    except RuntimeError as e:  # shape mismatches
        raise CheckpointError(f"checkpoint weights do not fit the native OpenVLA model: {e}") from e
    _materialize_buffers(model)
    return model.eval(), PrismaticInputs.from_pretrained(path)


def load_openvla_native(path: str | Path, *, dtype: Any = None, **adapter_kwargs: Any) -> OpenVLAAdapter:
    """An OpenVLA checkpoint directory -> OpenVLAAdapter over NativeOpenVLA (no remote code, no timm)."""
    model, processor = build_native_openvla(path, dtype)
    return OpenVLAAdapter(model, processor, **adapter_kwargs)
