"""Shared fixtures: tiny random models built from configs (no hub, seconds to build)."""

import numpy as np
import pytest
import torch

from dtp.envs import all_instruction_words
from dtp.models.llama_vla import LlamaVLAAdapter
from dtp.tinyvla import TinyVLA, TinyVLAConfig, build_word_tokenizer, save_tokenizer

WORDS = "push the red puck to goal open drawer press button reach target".split()


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a module (pytestmark = pytest.mark.usefixtures("one_torch_thread")): on a
    shared 2-core machine, two spinning threads make tiny batched passes 50x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_adapter() -> LlamaVLAAdapter:
    torch.manual_seed(0)
    cfg = TinyVLAConfig(
        image_size=48, patch_size=8, vision_width=32, hidden_size=64, num_layers=3,
        num_heads=4, intermediate_size=128, num_words=32,
    )
    return LlamaVLAAdapter(TinyVLA(cfg).eval(), build_word_tokenizer(WORDS))


@pytest.fixture()
def tiny_obs() -> dict:
    rng = np.random.default_rng(0)
    return {
        "image": rng.integers(0, 256, (48, 48, 3), dtype=np.uint8),
        "instruction": "push the red puck to the goal",
        "proprio": np.array([0.1, 0.5, 0.2, 1.0], dtype=np.float32),
    }


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A random TinyVLA at the benchmark's 96 px, saved like a real checkpoint."""
    torch.manual_seed(0)
    words = all_instruction_words()
    cfg = TinyVLAConfig(num_words=len(words) + 3, hidden_size=64, num_layers=2, num_heads=4,
                        intermediate_size=128, vision_width=32)
    path = tmp_path_factory.mktemp("tinyck")
    TinyVLA(cfg).save_pretrained(path)
    save_tokenizer(build_word_tokenizer(words), path)
    return path
