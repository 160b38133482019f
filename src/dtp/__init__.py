"""dtp: Distracting Token Pruning for vision-language-action policies (arXiv 2601.16065)."""

__version__ = "0.1.0"

__all__ = ["__version__", "DTPConfig", "DTPPolicy", "StepRecord", "StepResult"]


def __getattr__(name: str):
    """Import the heavy parts (torch, transformers) only when first used, so `import dtp` stays cheap."""
    if name == "DTPConfig":
        from .config import DTPConfig

        return DTPConfig
    if name in ("DTPPolicy", "StepRecord", "StepResult"):
        from . import policy

        return getattr(policy, name)
    raise AttributeError(f"module 'dtp' has no attribute {name!r}")
