"""Session fixtures around the tiny random VLMs of tiny_models.py (import helpers from there, not from here)."""

from __future__ import annotations

import pytest

from dtp.models.base import Observation

from tiny_models import (
    Tiny,
    observation,
    tiny_gemma3,
    tiny_idefics3,
    tiny_llava,
    tiny_openvla,
    tiny_paligemma2,
    tiny_qwen2_5_vl,
)


@pytest.fixture(scope="session")
def gemma3() -> Tiny:
    return tiny_gemma3()


@pytest.fixture(scope="session")
def idefics3() -> Tiny:
    return tiny_idefics3()


@pytest.fixture(scope="session")
def paligemma2() -> Tiny:
    return tiny_paligemma2()


@pytest.fixture(scope="session")
def paligemma2_small_window() -> Tiny:
    """Sliding window 16 < sequence length: the decode cache of sliding layers is cropped."""
    return tiny_paligemma2(sliding_window=16)


@pytest.fixture(scope="session")
def qwen2_5_vl() -> Tiny:
    return tiny_qwen2_5_vl()


@pytest.fixture(scope="session")
def llava() -> Tiny:
    return tiny_llava()


@pytest.fixture
def obs() -> Observation:
    return observation()


@pytest.fixture(scope="session")
def openvla() -> Tiny:
    return tiny_openvla()
