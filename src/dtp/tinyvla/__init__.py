"""Our small VLA: OpenVLA's structure in miniature, trained here on Meta-World demonstrations."""

__all__ = ["TinyVLA", "TinyVLAConfig", "build_word_tokenizer", "load_tokenizer", "save_tokenizer"]

_HOMES = {"TinyVLA": "modeling", "TinyVLAConfig": "configuration", "build_word_tokenizer": "tokenizer",
          "load_tokenizer": "tokenizer", "save_tokenizer": "tokenizer"}


def __getattr__(name: str):
    """Import a name's module (torch, transformers) only when the name is first used, so that a light
    submodule (the training flags) imports without them."""
    if name in _HOMES:
        from importlib import import_module

        return getattr(import_module(f".{_HOMES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
