"""The native OpenVLA path against a reference built with the real timm 0.9 towers (as Prismatic builds them).

Needs `timm` 0.9.x (0.9.16: the newest OpenVLA's code accepts), which needs a torchvision matching torch;
skipped where it is not installed. In CI it runs in its own venv (see .ci/run).

The reference is Prismatic's recipe, written here from its description: timm.create_model(<published id>,
num_classes=0, img_size=...) with the tiny sizes passed as overrides, forward = get_intermediate_layers(
n={depth - 2}), LayerScale weights under `gamma`, towers concatenated along channels, the fused GELU MLP,
then LlamaForCausalLM on [BOS, patches, rest]; images through timm's own eval transform (create_transform)
with Prismatic's "resize-naive" size, run by torchvision.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

timm = pytest.importorskip("timm")
if not timm.__version__.startswith("0.9."):
    pytest.skip(f"the reference needs timm 0.9.x (OpenVLA's), found {timm.__version__}", allow_module_level=True)

from tiny_models import INSTRUCTION, observation, word_tokenizer  # noqa: E402
from prismatic_timm import DINO, MEANS, SIGLIP, STDS, TEXT, TIMM_IDS, NORM_STATS, openvla_config, write_checkpoint  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

import dtp.models  # noqa: E402
from dtp.models.generic import _to_pil  # noqa: E402
from dtp.models.openvla import OPENVLA_PROMPT  # noqa: E402
from dtp.models.openvla_native import NativeOpenVLA, build_native_openvla, map_checkpoint, native_config  # noqa: E402

TOL = 1e-4  # the bound; the measured differences are printed by -s


def _timm_tower(timm_id: str, sizes: dict, sd: dict, prefix: str) -> torch.nn.Module:
    overrides = dict(embed_dim=sizes["width"], depth=sizes["depth"], num_heads=sizes["heads"],
                     mlp_ratio=sizes["mlp"] / sizes["width"], patch_size=sizes["patch"])
    tower = timm.create_model(timm_id, pretrained=False, num_classes=0, img_size=sizes["image"], **overrides)
    state = {k[len(prefix) + 1:].replace(".scale_factor", ".gamma"): v for k, v in sd.items() if k.startswith(prefix + ".")}
    tower.load_state_dict(state, strict=True)  # every checkpoint name and shape is timm's
    return tower.eval()


def _second_to_last(tower, x):
    return tower.get_intermediate_layers(x, n={len(tower.blocks) - 2})[0]


class Reference:
    """The checkpoint run the Prismatic way with timm towers."""

    def __init__(self, ckpt):
        import torchvision.transforms.functional as TVF
        from torchvision.transforms import CenterCrop, Compose, Normalize, Resize, ToTensor

        sd = load_file(str(ckpt / "model.safetensors"))
        self.dino = _timm_tower(TIMM_IDS[0], DINO, sd, "vision_backbone.featurizer")
        self.siglip = _timm_tower(TIMM_IDS[1], SIGLIP, sd, "vision_backbone.fused_featurizer")
        self.proj = {k[len("projector."):]: v for k, v in sd.items() if k.startswith("projector.")}
        cfg = openvla_config(sd["language_model.lm_head.weight"].shape[0])
        self.lm = LlamaForCausalLM(LlamaConfig(**{k: v for k, v in cfg["text_config"].items() if k != "model_type"}))
        self.lm.load_state_dict({k[len("language_model."):]: v for k, v in sd.items() if k.startswith("language_model.")})
        self.lm.eval()
        self.transforms = []
        for size, mean, std in zip((DINO["image"], SIGLIP["image"]), MEANS, STDS):
            t = timm.data.create_transform(input_size=(3, size, size), interpolation="bicubic", mean=mean, std=std,
                                           crop_pct=1.0, crop_mode="center", is_training=False)
            assert isinstance(t, Compose) and [type(x) for x in t.transforms] == [Resize, CenterCrop, ToTensor, Normalize]
            resize, crop, norm = t.transforms[0], t.transforms[1], t.transforms[3]
            self.transforms.append(lambda im, r=resize, c=crop, n=norm: TVF.normalize(TVF.to_tensor(TVF.center_crop(
                TVF.resize(im, (r.size, r.size), interpolation=r.interpolation, antialias=True), c.size)), n.mean, n.std))

    def pixels(self, image):
        return torch.cat([t(image.convert("RGB")) for t in self.transforms], dim=0).unsqueeze(0)

    def features(self, px):
        img, fused = torch.split(px, [3, 3], dim=1)
        return torch.cat([_second_to_last(self.dino, img), _second_to_last(self.siglip, fused)], dim=2)

    def project(self, f):
        p, gelu, lin = self.proj, torch.nn.functional.gelu, torch.nn.functional.linear
        h = gelu(lin(f, p["fc1.weight"], p["fc1.bias"]))
        h = gelu(lin(h, p["fc2.weight"], p["fc2.bias"]))
        return lin(h, p["fc3.weight"], p["fc3.bias"])

    def embeddings(self, ids, px):
        words = self.lm.get_input_embeddings()(ids)
        return torch.cat([words[:, :1], self.project(self.features(px)), words[:, 1:]], dim=1)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    ckpt = write_checkpoint(tmp_path_factory.mktemp("openvla-timm"), word_tokenizer())
    return ckpt, Reference(ckpt), dtp.models.load(ckpt)


def _diff(a, b) -> float:
    return float((a.float() - b.float()).abs().max())


@torch.no_grad()
def test_pixels_features_and_logits_match_timm(setup):
    ckpt, ref, adapter = setup
    prompt = OPENVLA_PROMPT.format(instruction=INSTRUCTION)
    for seed in (0, 1, 2):
        image = _to_pil(observation(seed=seed).image)
        enc = adapter.processor(prompt, image)
        px = enc["pixel_values"]
        d_px = _diff(px, ref.pixels(image))
        d_feat = _diff(adapter.model.vision_backbone(px), ref.features(px))
        d_proj = _diff(adapter.model.projector(adapter.model.vision_backbone(px)), ref.project(ref.features(px)))
        ours = adapter.model.language_model(inputs_embeds=adapter.model.multimodal_embeddings(enc["input_ids"], px)).logits
        theirs = ref.lm(inputs_embeds=ref.embeddings(enc["input_ids"], px)).logits
        d_logits = _diff(ours, theirs)
        print(f"seed {seed}: pixels {d_px:.2e} features {d_feat:.2e} projected {d_proj:.2e} logits {d_logits:.2e}")
        assert d_px <= 1e-6 and d_feat <= TOL and d_proj <= TOL and d_logits <= TOL
        # the comparison can fail: timm's last block (which Prismatic does not read) gives other features
        img, fused = torch.split(px, [3, 3], dim=1)
        last = torch.cat([ref.dino.get_intermediate_layers(img, n=1)[0], ref.siglip.get_intermediate_layers(fused, n=1)[0]], 2)
        assert _diff(adapter.model.vision_backbone(px), last) > 1e-2


@torch.no_grad()
def test_dtp_action_logits_match_timm(setup):
    """The adapter's pass-1 action logits (restricted to the 256 bins) against the reference, token by token."""
    ckpt, ref, adapter = setup
    obs = observation(seed=3)
    gen = adapter.generate(adapter.prepare(obs))
    enc = adapter.processor(OPENVLA_PROMPT.format(instruction=INSTRUCTION), _to_pil(obs.image))
    embeds = ref.embeddings(enc["input_ids"], enc["pixel_values"])
    ids = adapter.actions.token_ids
    worst = 0.0
    for t, b in enumerate(gen.action_bins.tolist()):
        logits = ref.lm(inputs_embeds=embeds).logits[0, -1]
        worst = max(worst, _diff(gen.action_logits[t], logits[ids]))
        embeds = torch.cat([embeds, ref.lm.get_input_embeddings()(ids[b].view(1, 1))], dim=1)
    print(f"action logits over {len(gen.action_bins)} tokens: max diff {worst:.2e}")
    assert worst <= TOL


@torch.no_grad()
def test_predict_action_matches_the_reference(setup):
    ckpt, ref, _ = setup
    model, proc = build_native_openvla(ckpt)
    enc = proc(OPENVLA_PROMPT.format(instruction=INSTRUCTION), _to_pil(observation(seed=4).image))
    empty = 5
    action = model.predict_action(enc["input_ids"], enc["pixel_values"], empty_token_id=empty)
    ids = torch.cat([enc["input_ids"], torch.tensor([[empty]])], 1)
    out = ref.lm.generate(inputs_embeds=ref.embeddings(ids, enc["pixel_values"]), max_new_tokens=7, min_new_tokens=7,
                          do_sample=False, attention_mask=torch.ones(1, ids.shape[1] + 16, dtype=torch.long))
    tokens = out[0, -7:].numpy()
    vocab = model.config.text_config.vocab_size - 64
    centres = (np.linspace(-1, 1, 256)[:-1] + np.linspace(-1, 1, 256)[1:]) / 2
    norm = centres[np.clip(vocab - tokens - 1, 0, 254)]
    s = NORM_STATS["bridge_orig"]["action"]
    want = np.where(s["mask"], 0.5 * (norm + 1) * (np.array(s["q99"]) - np.array(s["q01"])) + np.array(s["q01"]), norm)
    assert np.allclose(action, want, atol=1e-6)


def test_published_layout_maps_at_full_size():
    """openvla-7b's towers as timm builds them (224 px, random init, about 2.8 GB for a moment): every name maps
    onto the native model (on the meta device) with the right shape, heads from KNOWN_TOWERS."""
    sd = {}
    for prefix, timm_id in zip(("vision_backbone.featurizer", "vision_backbone.fused_featurizer"), TIMM_IDS):
        tower = timm.create_model(timm_id, pretrained=False, num_classes=0, img_size=224)  # meta: timm calls .item()
        sd |= {f"{prefix}.{k}".replace(".gamma", ".scale_factor"): v.to("meta") for k, v in tower.state_dict().items()}
        del tower
    dv, h, v = 1024 + 1152, 4096, 32064
    for name, (o, i) in {"fc1": (4 * dv, dv), "fc2": (h, 4 * dv), "fc3": (h, h)}.items():
        sd[f"projector.{name}.weight"] = torch.empty(o, i, device="meta")
        sd[f"projector.{name}.bias"] = torch.empty(o, device="meta")
    cfg = openvla_config(v)
    cfg["image_sizes"] = [224, 224]
    del cfg["dtp_vision_num_heads"]
    cfg["text_config"] = {"model_type": "llama", "vocab_size": v, "hidden_size": h, "intermediate_size": 11008,
                          "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
                          "max_position_embeddings": 2048, "pad_token_id": 32000, "tie_word_embeddings": False}
    with torch.device("meta"):
        lm = LlamaForCausalLM(LlamaConfig(**{k: x for k, x in cfg["text_config"].items() if k != "model_type"}))
    sd |= {f"language_model.{k}": x for k, x in lm.state_dict().items()}
    config = native_config(cfg, {k: tuple(x.shape) for k, x in sd.items()})
    assert [(t.family, t.width, t.depth, t.heads, t.mlp_width, t.register_tokens) for t in config.towers] == [
        ("dinov2", 1024, 24, 16, 4096, 4), ("siglip", 1152, 27, 16, 4304, 0)]
    mapped = map_checkpoint(sd, config)
    with torch.device("meta"):
        model = NativeOpenVLA(config)
    want = {k: tuple(x.shape) for k, x in model.state_dict().items()}
    assert {k: tuple(x.shape) for k, x in mapped.items()} == want
    # 256 patches of each tower, concatenated to 2176 channels
    assert model.vision_backbone.embed_dim == 2176


@pytest.mark.parametrize("strategy", ["resize-naive", "resize-crop", "letterbox"])
@pytest.mark.parametrize("hw", [(60, 80), (81, 50), (28, 28)])
def test_image_strategies_match_torchvision(strategy, hw):
    """PrismaticImageProcessor's three resize strategies, done by torchvision on PIL images as Prismatic does."""
    import torchvision.transforms.functional as TVF
    from PIL import Image

    from dtp.models.openvla_native import PrismaticInputs

    img = Image.fromarray(observation(h=hw[0], w=hw[1]).image)
    proc = PrismaticInputs(word_tokenizer(), [[3, 28, 28], [3, 28, 28]], MEANS, STDS, None, strategy)
    want = []
    for mean, std in zip(MEANS, STDS):
        x = img
        if strategy == "letterbox":
            (w, h), m = x.size, max(x.size)
            hp, vp = int((m - w) / 2), int((m - h) / 2)
            x = TVF.pad(x, [hp, vp, hp, vp], fill=tuple(int(v * 255) for v in mean), padding_mode="constant")
        size = (28, 28) if strategy == "resize-naive" else 28
        x = TVF.resize(x, size, interpolation=TVF.InterpolationMode.BICUBIC, antialias=True)
        want.append(TVF.normalize(TVF.to_tensor(TVF.center_crop(x, (28, 28))), mean, std))
    got = proc("x", img)["pixel_values"][0]
    assert _diff(got, torch.cat(want)) <= 1e-6
