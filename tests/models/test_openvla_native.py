"""The native OpenVLA path (no remote code, no timm) on a tiny random checkpoint in the published layout.

Numerical agreement with the real timm towers is test_openvla_timm.py (needs timm 0.9.16).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tiny_models import INSTRUCTION, observation, word_tokenizer
from prismatic_timm import DINO, NORM_STATS, SIGLIP, write_checkpoint
from safetensors.torch import load_file, save_file

import dtp.models
from dtp.errors import CheckpointError, UnsupportedModelError
from dtp.models.generic import _to_pil
from dtp.models.openvla import OPENVLA_PROMPT, OpenVLAAdapter, OpenVLABins
from dtp.models.openvla_native import NativeOpenVLA, build_native_openvla


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("openvla-native"), word_tokenizer())


@pytest.fixture(scope="module")
def native(ckpt):
    return dtp.models.load(ckpt)


def test_load_uses_the_native_path_by_default(native):
    assert isinstance(native, OpenVLAAdapter) and isinstance(native.model, NativeOpenVLA)
    vb = native.model.vision_backbone
    assert type(vb.featurizer).__name__ == "Dinov2WithRegistersModel"
    assert type(vb.fused_featurizer).__name__ == "SiglipVisionModel"
    # towers run depth - 1 blocks: Prismatic reads the second-to-last block's output
    assert len(vb.featurizer.encoder.layer) == DINO["depth"] - 1
    assert len(vb.fused_featurizer.encoder.layers) == SIGLIP["depth"] - 1
    assert native.unnorm_key == "bridge_orig" and native.actions.n_tokens == 7


def test_weights_land_where_the_checkpoint_puts_them(ckpt, native):
    sd = load_file(str(ckpt / "model.safetensors"))
    m = native.model
    d = DINO["width"]
    q, k, v = sd["vision_backbone.featurizer.blocks.1.attn.qkv.weight"].chunk(3)
    att = m.vision_backbone.featurizer.encoder.layer[1].attention
    assert torch.equal(att.q_proj.weight, q) and torch.equal(att.k_proj.weight, k) and torch.equal(att.v_proj.weight, v)
    ls = m.vision_backbone.featurizer.encoder.layer[0].layer_scale2.lambda1
    assert torch.equal(ls, sd["vision_backbone.featurizer.blocks.0.ls2.scale_factor"])
    pos = m.vision_backbone.featurizer.embeddings.position_embeddings
    assert torch.equal(pos[0, 0], torch.zeros(d)) and torch.equal(pos[:, 1:], sd["vision_backbone.featurizer.pos_embed"])
    sig = m.vision_backbone.fused_featurizer
    assert torch.equal(sig.embeddings.position_embedding.weight, sd["vision_backbone.fused_featurizer.pos_embed"][0])
    assert torch.equal(sig.encoder.layers[1].self_attn.out_proj.bias, sd["vision_backbone.fused_featurizer.blocks.1.attn.proj.bias"])
    assert torch.equal(m.projector.fc3.weight, sd["projector.fc3.weight"])
    assert torch.equal(m.language_model.lm_head.weight, sd["language_model.lm_head.weight"])


def test_image_features_are_the_second_to_last_block_by_hand(ckpt, native):
    """DINOv2-reg4 by hand from the timm tensors: cls/registers get no position, patches do; 2 of 3 blocks."""
    sd = load_file(str(ckpt / "model.safetensors"))
    p = "vision_backbone.featurizer."
    x = torch.randn(1, 3, 28, 28, generator=torch.Generator().manual_seed(1))
    t = torch.nn.functional.conv2d(x, sd[p + "patch_embed.proj.weight"], sd[p + "patch_embed.proj.bias"], stride=7)
    t = t.flatten(2).transpose(1, 2) + sd[p + "pos_embed"]
    t = torch.cat([sd[p + "cls_token"], sd[p + "reg_token"], t], dim=1)  # (1, 1 + 4 + 16, D)
    h = 4
    for i in range(DINO["depth"] - 1):
        b = f"{p}blocks.{i}."
        y = torch.nn.functional.layer_norm(t, (DINO["width"],), sd[b + "norm1.weight"], sd[b + "norm1.bias"], 1e-6)
        qkv = torch.nn.functional.linear(y, sd[b + "attn.qkv.weight"], sd[b + "attn.qkv.bias"])
        q, k, v = qkv.view(1, -1, 3, h, DINO["width"] // h).permute(2, 0, 3, 1, 4)
        a = torch.softmax(q @ k.transpose(-1, -2) / (DINO["width"] // h) ** 0.5, -1) @ v
        a = torch.nn.functional.linear(a.transpose(1, 2).flatten(2), sd[b + "attn.proj.weight"], sd[b + "attn.proj.bias"])
        t = t + sd[b + "ls1.scale_factor"] * a
        y = torch.nn.functional.layer_norm(t, (DINO["width"],), sd[b + "norm2.weight"], sd[b + "norm2.bias"], 1e-6)
        y = torch.nn.functional.linear(torch.nn.functional.gelu(torch.nn.functional.linear(y, sd[b + "mlp.fc1.weight"], sd[b + "mlp.fc1.bias"])),
                                       sd[b + "mlp.fc2.weight"], sd[b + "mlp.fc2.bias"])
        t = t + sd[b + "ls2.scale_factor"] * y
    ours = native.model.vision_backbone._patches(native.model.vision_backbone.featurizer, native.model.vision_backbone.specs[0], x)
    assert ours.shape == (1, 16, DINO["width"])
    assert torch.allclose(ours, t[:, 5:], atol=1e-5)


def test_a_different_image_changes_the_action_logits(native):
    """openvla/openvla #346: remote code under new transformers returned the same action for every image."""
    a, b = observation(seed=0), observation(seed=1)
    ga = native.generate(native.prepare(a))
    gb = native.generate(native.prepare(b))
    prompt = OPENVLA_PROMPT.format(instruction=INSTRUCTION)
    feats = [native.model.vision_backbone(native.processor(prompt, _to_pil(o.image))["pixel_values"]) for o in (a, b)]
    assert (feats[0] - feats[1]).abs().max() > 1e-2
    assert (ga.action_logits - gb.action_logits).abs().max() > 1e-3


def test_pixels_follow_the_checkpoints_transform(native):
    """Per tower: bicubic resize to 28 x 28, [0, 1], that tower's mean/std; towers stacked along channels."""
    from PIL import Image

    img = Image.fromarray(observation().image)
    px = native.processor("x", img)["pixel_values"]
    assert px.shape == (1, 6, 28, 28)
    small = np.asarray(img.resize((28, 28), Image.BICUBIC), dtype=np.float32) / 255
    for t, (mean, std) in enumerate(zip(native.processor.means, native.processor.stds)):
        want = (small - np.array(mean, dtype=np.float32)) / np.array(std, dtype=np.float32)
        assert np.allclose(px[0, 3 * t:3 * t + 3].permute(1, 2, 0).numpy(), want, atol=1e-6)


def test_predict_action_decodes_openvlas_way(ckpt):
    model, proc = build_native_openvla(ckpt)
    enc = proc(OPENVLA_PROMPT.format(instruction=INSTRUCTION), _to_pil(observation().image))
    empty = 5
    action = model.predict_action(enc["input_ids"], enc["pixel_values"], empty_token_id=empty)
    # the same thing by hand: append the empty token, greedy over the whole vocabulary, OpenVLA's bins and stats
    ids = torch.cat([enc["input_ids"], torch.tensor([[empty]])], 1)
    embeds = model.multimodal_embeddings(ids, enc["pixel_values"])
    tokens = []
    with torch.no_grad():
        for _ in range(7):
            nxt = int(model.language_model(inputs_embeds=embeds).logits[0, -1].argmax())
            tokens.append(nxt)
            embeds = torch.cat([embeds, model.language_model.get_input_embeddings()(torch.tensor([[nxt]]))], 1)
    s = NORM_STATS["bridge_orig"]["action"]
    vocab = model.config.text_config.vocab_size - 64
    edges = np.linspace(-1, 1, 256)
    centres = (edges[:-1] + edges[1:]) / 2
    norm = centres[np.clip(vocab - np.array(tokens) - 1, 0, 254)]
    want = np.where(s["mask"], 0.5 * (norm + 1) * (np.array(s["q99"]) - np.array(s["q01"])) + np.array(s["q01"]), norm)
    assert action.shape == (7,) and np.allclose(action, want, atol=1e-6)


def test_remote_code_stays_opt_in(tmp_path, ckpt):
    """A checkpoint the native path cannot build (no timm tower ids) says how to run its own code."""
    d = tmp_path / "other"
    d.mkdir()
    for f in ckpt.iterdir():
        (d / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((d / "config.json").read_text())
    del cfg["timm_model_ids"]
    (d / "config.json").write_text(json.dumps(cfg))
    (d / "modeling_prismatic.py").write_text("raise RuntimeError('remote code ran')\n")
    with pytest.raises(CheckpointError, match="trust_remote_code"):
        dtp.models.load(d)
    with pytest.raises(RuntimeError, match="remote code ran"):  # run only when asked for
        dtp.models.load(d, trust_remote_code=True)


def test_bad_checkpoints_are_named(tmp_path, ckpt):
    d = tmp_path / "bad"
    d.mkdir()
    for f in ckpt.iterdir():
        (d / f.name).write_bytes(f.read_bytes())
    sd = load_file(str(d / "model.safetensors"))
    sd["vision_backbone.featurizer.blocks.0.attn.extra"] = torch.zeros(1)
    save_file(sd, str(d / "model.safetensors"))
    with pytest.raises(CheckpointError, match="attn.extra"):
        dtp.models.load(d)
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["timm_model_ids"] = ["vit_large_patch14_clip_224.openai", cfg["timm_model_ids"][1]]
    (d / "config.json").write_text(json.dumps(cfg))
    save_file(load_file(str(ckpt / "model.safetensors")), str(d / "model.safetensors"))
    with pytest.raises(UnsupportedModelError, match="clip"):
        dtp.models.load(d)


def test_the_action_decoder_is_openvlas(native):
    v = native.model.config.text_config.vocab_size - 64
    s = NORM_STATS["bridge_orig"]["action"]
    want = OpenVLABins(vocab_size=v, q01=tuple(s["q01"]), q99=tuple(s["q99"]), mask=tuple(s["mask"]))
    ids = np.array([v - 1, v - 2, v - 100, v - 200, v - 255, v - 256, v - 3])
    bins = torch.tensor([1, 2, 100, 200, 255, 256, 3]) - 1  # adapter bin b is id v - 1 - b
    assert np.allclose(native.decode(bins), want(ids))


def test_dtp_runs_on_the_native_model(native):
    """Masking equals removal on the native model, and a two-pass DTP step prunes and returns a finite action."""
    from model_checks import mask_vs_removal

    from dtp.config import DTPConfig
    from dtp.policy import DTPPolicy

    inputs = native.prepare(observation())
    n = inputs.layout.num_image_tokens
    assert inputs.layout.grid == (4, 4)
    keep = torch.ones(n, dtype=torch.bool)
    keep[torch.randperm(n, generator=torch.Generator().manual_seed(1))[: n // 3]] = False
    diffs = mask_vs_removal(native, inputs, keep)
    assert diffs["prefill"] < 1e-5 and diffs["decode"] < 1e-5 and diffs["same_tokens"], diffs
    result = DTPPolicy(native, DTPConfig(tau=0.05, k=0.25)).step(observation())
    assert result.record.n_pruned > 0
    assert result.action.shape == (7,) and np.isfinite(result.action).all()


def test_loads_in_bfloat16_without_building_the_model_twice(ckpt, native):
    """Built on the meta device and filled from the checkpoint: no tensor left empty, RoPE's buffers
    computed (float32 as transformers keeps them), and the bf16 model follows the float32 one."""
    model, _ = build_native_openvla(ckpt, torch.bfloat16)
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])
    assert model.language_model.lm_head.weight.dtype == torch.bfloat16
    rope = model.language_model.model.rotary_emb
    assert rope.inv_freq.dtype == torch.float32
    assert torch.equal(rope.inv_freq, native.model.language_model.model.rotary_emb.inv_freq)
    pos = model.vision_backbone.fused_featurizer.embeddings.position_ids
    assert pos.flatten().tolist() == list(range(16))
    adapter = OpenVLAAdapter(model, native.processor)
    g16, g32 = (a.generate(a.prepare(observation())) for a in (adapter, native))
    assert torch.isfinite(g16.action_logits).all()
    assert (g16.action_logits[0] - g32.action_logits[0]).abs().max() < 0.1 * g32.action_logits[0].abs().max()
