"""The word tokenizer: unknown words become [UNK] or a clear InputError, never a crash inside tokenizers."""

import numpy as np
import pytest
from tokenizers import Tokenizer, pre_tokenizers
from tokenizers.models import WordLevel

from dtp.envs import all_instruction_words
from dtp.errors import InputError
from dtp.policy import DTPPolicy
from dtp.tinyvla.tokenizer import UNK, build_word_tokenizer, encode_instruction, unknown_words


def test_known_words_keep_their_ids_and_case_is_folded():
    tok = build_word_tokenizer(["push", "the", "red", "puck"])
    ids = encode_instruction(tok, "Push the RED puck")
    assert ids == [tok.token_to_id(w) for w in ("push", "the", "red", "puck")]
    assert unknown_words(tok, "Push the RED puck") == []


def test_unknown_word_maps_to_unk_or_raises_naming_it():
    tok = build_word_tokenizer(["push", "the", "puck"])
    unk = tok.token_to_id(UNK)
    assert encode_instruction(tok, "push the magenta puck") == [
        tok.token_to_id("push"), tok.token_to_id("the"), unk, tok.token_to_id("puck")]
    with pytest.raises(InputError, match="outside the model's vocabulary: magenta, teal"):
        encode_instruction(tok, "push the magenta puck the teal teal", unknown="error")
    with pytest.raises(InputError, match="unknown="):
        encode_instruction(tok, "push", unknown="ignore")


def test_tokenizer_without_unk_gives_input_error_not_a_tokenizers_crash():
    tok = Tokenizer(WordLevel(vocab={"push": 0, "puck": 1}))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    with pytest.raises(Exception, match="Missing \\[UNK\\]"):  # what tokenizers itself does
        tok.encode("push the puck")
    with pytest.raises(InputError, match="no \\[UNK\\] token.*: the"):
        encode_instruction(tok, "push the puck")


def test_policy_runs_on_a_colour_its_vocabulary_lacks(tiny_adapter, tiny_obs):
    obs = {**tiny_obs, "instruction": "push the magenta puck to the goal"}
    assert "magenta" not in tiny_adapter.tokenizer.get_vocab()
    out = DTPPolicy(tiny_adapter).step(obs)
    assert np.all(np.isfinite(out.action))


def test_benchmark_vocabulary_has_every_colour_word():
    tok = build_word_tokenizer(all_instruction_words())
    from dtp.envs.tasks import TASKS
    from dtp.envs.variants import VARIANTS

    for task in TASKS.values():
        for tpl in task.grounded_templates:
            for variant in VARIANTS.values():
                for split in variant.splits.values():
                    for colour in split.palette:
                        text = tpl.format(object=colour, goal=colour)
                        encode_instruction(tok, text, unknown="error")
