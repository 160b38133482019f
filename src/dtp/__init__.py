"""dtp: Distracting Token Pruning for vision-language-action policies (arXiv 2601.16065)."""

__version__ = "0.1.0"
