import pytest
import torch

from dtp.envs import all_instruction_words
from dtp.tinyvla import TinyVLA, TinyVLAConfig, build_word_tokenizer, save_tokenizer


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
