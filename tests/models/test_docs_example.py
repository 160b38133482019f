"""The custom-architecture example in docs/use-with-your-model.md runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from tiny_models import observation
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from dtp.config import DTPConfig
from dtp.policy import DTPPolicy

DOC = Path(__file__).resolve().parents[2] / "docs" / "use-with-your-model.md"


class MyModel(nn.Module):
    """The model the example assumes: encode_image -> (1, N, D) on a 16-wide grid, tokenize -> (1, P)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        cfg = LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, max_position_embeddings=128)
        cfg._attn_implementation = "sdpa"
        self.lm = LlamaForCausalLM(cfg)
        self.patch = nn.Linear(3 * 8 * 8, 32)

    def encode_image(self, image: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(image[:16, :64].astype(np.float32) / 255)  # (16, 64, 3) -> 2 x 8 patches of 8x8
        x = x.reshape(2, 8, 8, 8, 3).permute(0, 2, 1, 3, 4).reshape(1, 16, -1)
        return self.patch(torch.cat([x, x.flip(1)], dim=1))  # (1, 32, 32): a 2 x 16 grid

    def tokenize(self, text: str) -> torch.Tensor:
        return torch.tensor([[3 + (sum(map(ord, w)) % 40) for w in text.split()]])


def test_the_documented_adapter_runs_dtp():
    code = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    example = next(c for c in code if "class MyAdapter" in c)
    assert len(example.splitlines()) <= 45
    ns: dict = {}
    exec(example, ns)
    adapter = ns["MyAdapter"](MyModel())
    result = DTPPolicy(adapter, DTPConfig(tau=0.05)).step(observation())
    assert result.record.n_pruned > 0
    assert result.action.shape == (7,) and np.isfinite(result.action).all()
