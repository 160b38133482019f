"""DTP on a tiny random pi0 (transformers' PI0ForConditionalGeneration), built from a config with its
processor, no checkpoint and no download. With real weights: `adapter = load("/path/to/pi0")`."""

import numpy as np
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PI0Config, PI0ForConditionalGeneration, PreTrainedTokenizerFast

from dtp import DTPConfig, DTPPolicy
from dtp.models import Observation, wrap_model
from dtp.models.pi0 import pi0_processor

words = ["[PAD]", "[BOS]", "[UNK]", "pick", "up", "the", "red", "block"]
tokenizer = PreTrainedTokenizerFast(
    tokenizer_object=Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]")),
    pad_token="[PAD]", bos_token="[BOS]", unk_token="[UNK]")
tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()

# the processor first: it adds pi0's <image>, <loc> and <seg> tokens, which the model's vocabulary needs
processor = pi0_processor(tokenizer, image_size=32, patch_size=8, chunk_size=5, max_state_dim=8,
                          state_mean=[0.0] * 4, state_std=[1.0] * 4, actions_mean=[0.0] * 4, actions_std=[1.0] * 4)
config = PI0Config(
    vlm_config=dict(
        model_type="paligemma", image_token_id=processor.image_token_id, projection_dim=32,
        text_config=dict(model_type="gemma", vocab_size=len(processor.tokenizer), hidden_size=32,
                         intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=1,
                         head_dim=16),
        vision_config=dict(model_type="siglip_vision_model", image_size=32, patch_size=8, hidden_size=32,
                           intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, vision_use_head=False)),
    dit_config=dict(model_type="gemma", hidden_size=16, intermediate_size=32, num_hidden_layers=3,
                    num_attention_heads=4, num_key_value_heads=1, head_dim=16),
    chunk_size=5, max_state_dim=8, max_action_dim=8, num_inference_steps=3)
torch.manual_seed(0)
model = PI0ForConditionalGeneration(config).eval()
pi0_processor(tokenizer, config=model.config)  # checks a model against a processor (raises if they disagree)

adapter = wrap_model(model, processor)
policy = DTPPolicy(adapter, DTPConfig(tau=1.0))
policy.reset(seed=0)  # also seeds the noise the action expert starts from
rng = np.random.default_rng(0)
obs = Observation(image=rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), instruction="pick up the red block",
                  proprio=rng.uniform(-1, 1, 4).astype(np.float32))
result = policy.step(obs)
rec = result.record
print(f"image tokens: {rec.grid[0]} x {rec.grid[1]}; G holds {rec.n_region}, DTP pruned {rec.n_pruned}")
print(f"action chunk: {result.action.shape}, changed by pass 2: {rec.action_changed}")
