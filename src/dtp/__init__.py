"""dtp: Distracting Token Pruning for vision-language-action policies (arXiv 2601.16065)."""

__version__ = "0.1.0"

from .config import DTPConfig  # noqa: E402
from .policy import DTPPolicy, StepRecord, StepResult  # noqa: E402

__all__ = ["__version__", "DTPConfig", "DTPPolicy", "StepRecord", "StepResult"]
