"""One exception type per kind of misuse, so callers can catch exactly what they expect."""


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
