"""Fixtures of the CLI tests: a tiny random checkpoint at the benchmark's 96 px, and a helper that
runs `dtp` in-process and returns (exit code, stdout, stderr)."""

import pytest
import torch

from dtp.cli import main
from dtp.envs import all_instruction_words
from dtp.tinyvla import TinyVLA, TinyVLAConfig, build_word_tokenizer, save_tokenizer

@pytest.fixture(scope="session")
def tiny_ck(tmp_path_factory):
    torch.manual_seed(0)
    words = all_instruction_words()
    cfg = TinyVLAConfig(num_words=len(words) + 3, hidden_size=64, num_layers=2, num_heads=4,
                        intermediate_size=128, vision_width=32)
    path = tmp_path_factory.mktemp("tinyck")
    TinyVLA(cfg).save_pretrained(path)
    save_tokenizer(build_word_tokenizer(words), path)
    return path


@pytest.fixture()
def dtp(capsys):
    """dtp(*words) -> (code, out, err); argparse exits become codes too."""

    def run(*argv):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as e:
            code = e.code
        out, err = capsys.readouterr()
        return code, out, err

    return run
