"""Grounding frames (written by `dtp.tinyvla.grounding`) held in memory as training tensors.

Every question is one sample: [BOS][image][registers][question words][proprio] -> one answer
word, predicted at the proprio token (where an action model emits its first action token).
Frames written with instruction targets also carry, per frame, the task instruction and its
colour-swapped twin with the patches each names (the instruction-attention loss's targets).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from .data import DataError, to_pixels
from .questions import QUESTION_KINDS, grounding_words
from .tokenizer import BOS, PAD, build_word_tokenizer

__all__ = ["GroundingSet", "GroundingBatch", "load_grounding", "grounded_tokenizer", "cell_of_token"]

KINDS = tuple(QUESTION_KINDS)


def grounded_tokenizer(grid: tuple[int, int], extra_words: list[str] = ()) -> Tokenizer:
    """Word tokenizer over the benchmark's instruction words, every grounding word for `grid`
    (cells, digits, colours, nouns) and `extra_words` (e.g. the demos' instructions)."""
    words = set(grounding_words(grid)) | {w.lower() for w in extra_words}
    try:
        from ..envs.tasks import all_instruction_words

        words.update(all_instruction_words())
    except ImportError:  # the benchmark package is optional for training on a folder of files
        pass
    return build_word_tokenizer(sorted(words))


def cell_of_token(word: str) -> tuple[int, int] | None:
    """(row, col) of a 'cell_<row>_<col>' word, None for any other word."""
    parts = word.split("_")
    if len(parts) == 3 and parts[0] == "cell" and parts[1].isdigit() and parts[2].isdigit():
        return int(parts[1]), int(parts[2])
    return None


@dataclass
class GroundingBatch:
    pixels: torch.Tensor  # (B, 3, H, W) float in [0, 1]
    ids: torch.Tensor  # (B, 1 + P_max) long: BOS, question words, PAD...
    word_lengths: torch.Tensor  # (B,) long
    proprio: torch.Tensor  # (B, P) float32
    answers: torch.Tensor  # (B,) long word ids
    kind_ids: torch.Tensor  # (B,) long, index into KINDS


@dataclass
class GroundingSet:
    """F frames and Q questions about them."""

    images: torch.Tensor  # (F, H, W, 3) uint8
    proprio: torch.Tensor  # (F, P) float32
    frame: torch.Tensor  # (Q,) long: the frame each question is about
    ids: torch.Tensor  # (Q, 1 + P_max) long
    word_lengths: torch.Tensor  # (Q,) long
    answers: torch.Tensor  # (Q,) long word ids
    kind_ids: torch.Tensor  # (Q,) long
    answer_words: list[str]  # (Q,)
    n_frames: int
    # dense labels (frames written with them): (F, W, N) bool, patch n holds an object word w describes
    patch_words: torch.Tensor | None = None
    patch_word_names: tuple[str, ...] = ()
    # instruction targets (frames written with them): variant 0 the frame's instruction, 1 its
    # colour-swapped twin (length 0 and no patches where the frame has none)
    instruction_ids: torch.Tensor | None = None  # (F, 2, 1 + P_max) long: BOS, words, PAD...
    instruction_lengths: torch.Tensor | None = None  # (F, 2) long
    instruction_regions: torch.Tensor | None = None  # (F, 2, N) bool: the patches each names
    instruction_swap_word: torch.Tensor | None = None  # (F,) long: index of the word the twin swaps (0: no twin)

    def __len__(self) -> int:
        return int(self.frame.shape[0])

    def patch_words_over(self, names: tuple[str, ...]) -> torch.Tensor:
        """patch_words re-indexed to the word list `names` (e.g. a head trained on other frames):
        (F, len(names), N) bool, all False for a word these frames never show."""
        if self.patch_words is None:
            raise DataError("these grounding frames have no patch_words labels")
        missing = sorted(set(self.patch_word_names) - set(names))
        if missing:
            raise DataError(f"patch words {missing} are not among the {len(names)} words of the head")
        return torch.from_numpy(_reindex_words(self.patch_words.numpy(), self.patch_word_names, names))

    def instructions(self, frames: torch.Tensor, swapped: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(ids (B, 1 + P), word lengths (B,), regions (B, N) bool, swap word (B,) long) of frames
        (B,): the swapped twin where `swapped` (B,) bool asks for it and the frame has one, else the
        instruction. The swap word is the index of the colour word the two differ in (0 without a
        twin): words before it cannot know which of the lookalikes is meant."""
        if self.instruction_ids is None:
            raise DataError("these grounding frames have no instruction targets")
        variant = (swapped & (self.instruction_lengths[frames, 1] > 0)).long()  # (B,)
        lengths = self.instruction_lengths[frames, variant]
        p_max = int(lengths.max()) if len(frames) else 0
        return (self.instruction_ids[frames, variant, : 1 + p_max], lengths,
                self.instruction_regions[frames, variant], self.instruction_swap_word[frames])

    def batch(self, index: torch.Tensor, pixels: torch.Tensor | None = None) -> GroundingBatch:
        """Questions at `index` (B,); `pixels` replaces their frames' un-augmented images."""
        frames = self.frame[index]
        lengths = self.word_lengths[index]
        p_max = int(lengths.max()) if len(index) else 0
        return GroundingBatch(
            pixels=to_pixels(self.images[frames]) if pixels is None else pixels,
            ids=self.ids[index, : 1 + p_max],
            word_lengths=lengths,
            proprio=self.proprio[frames],
            answers=self.answers[index],
            kind_ids=self.kind_ids[index],
        )


def _shards(directory: Path) -> list[Path]:
    if not directory.is_dir():
        raise DataError(f"grounding folder {directory} does not exist "
                        "(write one with `dtp grounding-data --out ... --split ...`)")
    files = sorted(directory.glob("shard_*.h5"))
    if not files:
        raise DataError(f"no grounding shards (shard_*.h5) in {directory}")
    return files


def load_grounding(directory: str | Path, tokenizer: Tokenizer, image_size: int) -> GroundingSet:
    """Read every shard of one split folder (e.g. data/grounding/train) and tokenize its questions.

    A question or answer word the tokenizer does not know is an error (DataError naming the
    words), never a silent [UNK].
    """
    import h5py

    images, proprio, frame, kinds, questions, answers = [], [], [], [], [], []
    word_maps: list[tuple[list[str], np.ndarray] | None] = []  # per shard: (names, (F, W, N) bool)
    targets: list[tuple[list[str], list[str], np.ndarray, np.ndarray] | None] = []  # per shard, see _instruction_targets
    offset = 0
    for path in _shards(Path(directory)):
        with h5py.File(path, "r") as f:
            if "patch_words" in f:
                word_maps.append(([w.decode() for w in f["patch_word_names"][()]], np.asarray(f["patch_words"][()], bool)))
            else:
                word_maps.append(None)
            if "instructions" in f:
                targets.append(([t.decode() for t in f["instructions"][()]], [t.decode() for t in f["swapped_instructions"][()]],
                                np.asarray(f["instruction_regions"][()], bool), np.asarray(f["swapped_regions"][()], bool)))
            else:
                targets.append(None)
            im = np.asarray(f["images"][()])
            if im.ndim != 4 or im.shape[1:3] != (image_size, image_size):
                raise DataError(f"{path}: frames are {im.shape[1:3]}, the model reads {image_size} px")
            images.append(im)
            proprio.append(np.asarray(f["proprio"][()], dtype=np.float32))
            frame.append(np.asarray(f["qa_frame"][()], dtype=np.int64) + offset)
            kinds += [k.decode() for k in f["qa_kind"][()]]
            questions += [q.decode() for q in f["qa_question"][()]]
            answers += [a.decode() for a in f["qa_answer"][()]]
            offset += im.shape[0]
    vocab = tokenizer.get_vocab()
    texts = [t for shard in targets if shard is not None for t in shard[0] + shard[1]]
    unknown = sorted({w for text in questions + answers + texts for w in text.split() if w not in vocab})
    if unknown:
        raise DataError(f"grounding words missing from the tokenizer: {unknown[:10]} "
                        "(build it with dtp.tinyvla.grounding_data.grounded_tokenizer)")
    bad_kinds = sorted(set(kinds) - set(KINDS))
    if bad_kinds:
        raise DataError(f"unknown question kinds {bad_kinds} in {directory}; known: {KINDS}")
    patch_words, names = _merge_word_maps(word_maps)
    encoded = [tokenizer.encode(q, add_special_tokens=False).ids for q in questions]
    p_max = max(len(e) for e in encoded)
    pad, bos = tokenizer.token_to_id(PAD), tokenizer.token_to_id(BOS)
    ids = torch.tensor([[bos] + e + [pad] * (p_max - len(e)) for e in encoded], dtype=torch.long)
    instruction_ids, instruction_lengths, instruction_regions, swap_word = _instruction_targets(targets, tokenizer)
    return GroundingSet(
        images=torch.from_numpy(np.concatenate(images)),
        proprio=torch.from_numpy(np.concatenate(proprio)),
        frame=torch.from_numpy(np.concatenate(frame)),
        ids=ids,
        word_lengths=torch.tensor([len(e) for e in encoded], dtype=torch.long),
        answers=torch.tensor([vocab[a] for a in answers], dtype=torch.long),
        kind_ids=torch.tensor([KINDS.index(k) for k in kinds], dtype=torch.long),
        answer_words=answers,
        n_frames=offset,
        patch_words=patch_words,
        patch_word_names=names,
        instruction_ids=instruction_ids,
        instruction_lengths=instruction_lengths,
        instruction_regions=instruction_regions,
        instruction_swap_word=swap_word,
    )


def _instruction_targets(shards: list, tokenizer: Tokenizer) -> tuple[torch.Tensor | None, ...]:
    """Per frame, the instruction and its swapped twin tokenized, with their regions (None x 4
    unless every shard has them): ids (F, 2, 1 + P_max), lengths (F, 2), regions (F, 2, N), and
    the index of the first word the two differ in (F,) (0 where there is no twin)."""
    if not shards or any(t is None for t in shards):
        return None, None, None, None
    texts = [pair for plain, swapped, _, _ in shards for pair in zip(plain, swapped)]
    encoded = [[tokenizer.encode(t, add_special_tokens=False).ids if t else [] for t in pair] for pair in texts]
    p_max = max(len(e) for pair in encoded for e in pair)
    pad, bos = tokenizer.token_to_id(PAD), tokenizer.token_to_id(BOS)
    ids = torch.tensor([[[bos] + e + [pad] * (p_max - len(e)) for e in pair] for pair in encoded], dtype=torch.long)
    lengths = torch.tensor([[len(e) for e in pair] for pair in encoded], dtype=torch.long)
    regions = np.concatenate([np.stack([plain, swapped], axis=1) for _, _, plain, swapped in shards])  # (F, 2, N)
    swap_word = torch.tensor([next((i for i, (a, b) in enumerate(zip(*pair)) if a != b), 0) if pair[1] else 0
                              for pair in encoded], dtype=torch.long)
    return ids, lengths, torch.from_numpy(regions), swap_word


def _merge_word_maps(maps: list) -> tuple[torch.Tensor | None, tuple[str, ...]]:
    """One (F, W, N) bool tensor over the union of the shards' word lists (None unless every shard has one)."""
    if not maps or any(m is None for m in maps):
        return None, ()
    names = sorted({w for shard_names, _ in maps for w in shard_names})
    parts = [_reindex_words(arr, shard_names, names) for shard_names, arr in maps]
    return torch.from_numpy(np.concatenate(parts)), tuple(names)


def _reindex_words(labels: np.ndarray, names: list[str] | tuple[str, ...], onto: list[str] | tuple[str, ...]) -> np.ndarray:
    """(F, len(names), N) bool labels moved onto the word list `onto` (a superset): (F, len(onto), N),
    all False for a word `names` lacks."""
    out = np.zeros((labels.shape[0], len(onto), labels.shape[2]), dtype=bool)
    out[:, [list(onto).index(w) for w in names]] = labels
    return out
