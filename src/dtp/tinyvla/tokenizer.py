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


def unknown_words(tok: Tokenizer, instruction: str) -> list[str]:
    """Words of `instruction` (after the tokenizer's normalisation) missing from its vocabulary."""
    text = tok.normalizer.normalize_str(instruction) if tok.normalizer is not None else instruction
    words = [w for w, _ in tok.pre_tokenizer.pre_tokenize_str(text)] if tok.pre_tokenizer is not None else text.split()
    vocab = tok.get_vocab()
    return list(dict.fromkeys(w for w in words if w not in vocab))


def encode_instruction(tok: Tokenizer, instruction: str, *, unknown: str = "unk") -> list[int]:
    """Word ids of an instruction (no specials).

    unknown: what a word outside the vocabulary becomes: "unk" -> the [UNK] id (a model that
    never saw the word, e.g. a colour name of a custom palette, still runs), "error" ->
    InputError naming the words. Raises InputError for an empty instruction, and for unknown
    words when the tokenizer has no [UNK] token.
    """
    if not isinstance(instruction, str) or not instruction.strip():
        raise InputError("the instruction is empty; give the task in words, e.g. 'push the puck to the goal'")
    if unknown not in ("unk", "error"):
        raise InputError(f"unknown= must be 'unk' or 'error', got {unknown!r}")
    missing = unknown_words(tok, instruction)
    if missing and (unknown == "error" or tok.token_to_id(UNK) is None):
        why = "" if unknown == "error" else " and the tokenizer has no [UNK] token to stand for them"
        raise InputError(
            f"instruction {instruction!r} has words outside the model's vocabulary{why}: {', '.join(missing)}"
        )
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
