"""A word-level tokenizer (HF `tokenizers`) for instructions: lower-case words, specials first."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordLevel

from ..errors import CheckpointError, InputError

PAD, BOS, UNK = "[PAD]", "[BOS]", "[UNK]"
SPECIALS = (PAD, BOS, UNK)
TOKENIZER_NAME = "tokenizer.json"


def build_word_tokenizer(words: list[str]) -> Tokenizer:
    """Ids: [PAD]=0, [BOS]=1, [UNK]=2, then the sorted unique words."""
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for w in sorted({w.lower() for w in words} - set(SPECIALS)):
        vocab[w] = len(vocab)
    tok = Tokenizer(WordLevel(vocab=vocab, unk_token=UNK))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    return tok


def encode_instruction(tok: Tokenizer, instruction: str) -> list[int]:
    """Word ids of an instruction (no specials). Raises InputError for an empty one."""
    if not isinstance(instruction, str) or not instruction.strip():
        raise InputError("the instruction is empty; give the task in words, e.g. 'push the puck to the goal'")
    return tok.encode(instruction, add_special_tokens=False).ids


def save_tokenizer(tok: Tokenizer, directory: str | Path) -> None:
    tok.save(str(Path(directory) / TOKENIZER_NAME))


def load_tokenizer(directory: str | Path) -> Tokenizer:
    path = Path(directory) / TOKENIZER_NAME
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: a TinyVLA checkpoint needs its tokenizer.json")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:
        raise CheckpointError(f"{path} is not a valid tokenizers JSON file: {e}") from e
