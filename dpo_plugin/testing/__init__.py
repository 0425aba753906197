"""Test helpers for this package and for plugin authors: tiny models and tokenizers built from configs (no hub).

``tiny-model/`` is a saved tiny Llama with its tokenizer and ``tiny.yaml`` a one-minute CPU training config
on the demo's pairs.
"""

from .tiny import save_tiny, tiny_model, tiny_tokenizer

__all__ = ["save_tiny", "tiny_model", "tiny_tokenizer"]
