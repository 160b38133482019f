"""DTP on a tiny random OpenVLA (Prismatic layout: DINOv2 + SigLIP towers, fused projector, Llama), built from
configs, no checkpoint and no download. With real weights: `adapter = load("/path/to/openvla-7b",
unnorm_key="bridge_orig")` builds the same modules and loads the checkpoint into them."""

import numpy as np
import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from transformers import LlamaConfig, PreTrainedTokenizerFast

from dtp import DTPConfig, DTPPolicy
from dtp.models import Observation, wrap_model
from dtp.models.openvla_native import NativeOpenVLA, NativeOpenVLAConfig, PrismaticInputs, TowerSpec

words = ["<pad>", "<s>", "</s>", "<unk>", "in", "what", "action", "should", "the", "robot", "take", "to", "pick",
         "up", "red", "block", "?", "out", ":"]
tokenizer = PreTrainedTokenizerFast(
    tokenizer_object=Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>")),
    pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>")
tokenizer.backend_tokenizer.normalizer = normalizers.Lowercase()
tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
    [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])

# OpenVLA-7B's shape in miniature: two 28 px towers of 7 px patches (16 image tokens), a 3-layer Llama whose
# last 256 ids are the action bins, and one dataset's action statistics (q01 / q99) to scale 7-D actions
stats = {"bridge_orig": {"action": {"q01": [-0.03] * 6 + [0.0], "q99": [0.03] * 6 + [1.0], "mask": [True] * 6 + [False]}}}
config = NativeOpenVLAConfig(
    text_config=LlamaConfig(vocab_size=len(words) + 256, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                            num_attention_heads=4, num_key_value_heads=2, pad_token_id=0, bos_token_id=1,
                            eos_token_id=2),
    towers=[TowerSpec("dinov2", width=32, depth=3, heads=4, mlp_width=128, patch_size=7, image_size=28,
                      register_tokens=4, class_token=True, layerscale=True),
            TowerSpec("siglip", width=24, depth=3, heads=4, mlp_width=48, patch_size=7, image_size=28)],
    norm_stats=stats)
torch.manual_seed(0)
model = NativeOpenVLA(config).eval()
processor = PrismaticInputs(tokenizer, input_sizes=[(3, 28, 28)] * 2, means=[(0.485, 0.456, 0.406), (0.5,) * 3],
                            stds=[(0.229, 0.224, 0.225), (0.5,) * 3])

adapter = wrap_model(model, processor, unnorm_key="bridge_orig")
policy = DTPPolicy(adapter, DTPConfig(tau=1.0))
image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
result = policy.step(Observation(image=image, instruction="pick up the red block"))
rec = result.record
print(f"image tokens: {rec.grid[0]} x {rec.grid[1]}; G holds {rec.n_region}, DTP pruned {rec.n_pruned}")
print(f"action tokens: pass 1 {rec.tokens_pass1}, pass 2 {rec.tokens}")
print(f"action (7-D, bridge_orig scale): {[round(float(x), 3) for x in result.action]}")
