"""One exception type per kind of misuse, so callers can catch exactly what they expect."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class DTPError(Exception):
    """Base class of every error dtp raises on purpose."""


class ConfigError(DTPError, ValueError):
    """A DTPConfig (or CLI option) value is out of range or inconsistent."""


class InputError(DTPError, ValueError):
    """An observation is malformed: wrong image shape or dtype, empty instruction."""


class LayoutError(DTPError, ValueError):
    """The model's token sequence cannot be used for DTP (e.g. it has no image tokens)."""


class AttentionError(DTPError, ValueError):
    """Captured attention rows are unusable (NaN, wrong shape, nothing captured)."""


class CheckpointError(DTPError, OSError):
    """A checkpoint is missing, corrupt, or of another architecture."""


class UnsupportedModelError(DTPError, TypeError):
    """A model cannot be wrapped by any adapter (no image token id, no attention interface)."""


def did_you_mean(name: object, choices: Iterable[object]) -> str:
    """" (did you mean 'x'?)" naming the closest of `choices` to a mistyped `name`, else "" (for messages)."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
