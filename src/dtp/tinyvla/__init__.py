"""Our small VLA: OpenVLA's structure in miniature, trained here on Meta-World demonstrations."""

from .modeling import TinyVLA, TinyVLAConfig
from .tokenizer import build_word_tokenizer, load_tokenizer, save_tokenizer

__all__ = ["TinyVLA", "TinyVLAConfig", "build_word_tokenizer", "load_tokenizer", "save_tokenizer"]
