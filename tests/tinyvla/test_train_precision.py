"""--precision auto: bf16 only where the CPU computes it natively (emulated bf16 is about 10x slower)."""

import pytest

from dtp.errors import ConfigError
from dtp.tinyvla.train.config import TrainConfig
from dtp.tinyvla.train.precision import native_bf16, uses_bf16

AVX2_ONLY = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\nprocessor\t: 1\nflags\t\t: fpu sse2 avx avx2 fma\n"
SAPPHIRE = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
ZEN4 = "flags\t\t: avx2 avx512f avx512bw avx512_bf16\n"


def test_native_bf16_reads_the_flags():
    assert not native_bf16(AVX2_ONLY)
    assert native_bf16(SAPPHIRE) and native_bf16(ZEN4)
    assert not native_bf16("flags\t\t: avx512f avx512bw\n")  # AVX-512 without its bf16 extension emulates
    assert not native_bf16("model name : avx512_bf16 in a name, not a flag\n")


def test_explicit_precisions_win_and_auto_follows_the_machine():
    assert uses_bf16("bf16") and not uses_bf16("fp32")
    assert uses_bf16("auto") == native_bf16()


def test_train_config_defaults_to_auto_and_names_a_bad_precision(tmp_path):
    assert TrainConfig(data_dir=str(tmp_path), out_dir=str(tmp_path / "run")).precision == "auto"
    with pytest.raises(ConfigError, match="precision must be one of auto, bf16, fp32"):
        TrainConfig(data_dir=str(tmp_path), out_dir=str(tmp_path / "run"), precision="fp16")
