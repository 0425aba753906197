"""Loading the model a model-based judge runs on (a hub id, a local path, or an object)."""

from __future__ import annotations

import os
from typing import Any

from ...errors import ConfigError


def load_judge_model(
    model: Any, tokenizer: Any, auto_class: str, *, device: str | None = None, dtype: str | None = None
) -> tuple[Any, Any]:
    """``(model, tokenizer)`` in eval mode on ``device`` (default: CUDA when available)."""
    import torch
    import transformers

    if isinstance(model, str):
        local = model.startswith((".", "/", "~")) or model.count("/") > 1
        if local and not os.path.exists(os.path.expanduser(model)):
            raise ConfigError(f"The judge model path {model!r} does not exist.")
        try:
            tokenizer = tokenizer or transformers.AutoTokenizer.from_pretrained(os.path.expanduser(model))
            model = getattr(transformers, auto_class).from_pretrained(
                os.path.expanduser(model), dtype=getattr(torch, dtype) if dtype else None
            )
        except OSError as error:
            raise ConfigError(f"Cannot load the judge model {model!r}: {error}") from None
    elif model is None:
        raise ConfigError("This judge needs judge_params: {model: HUB_ID_OR_PATH}.")
    if tokenizer is None:
        raise ConfigError("A judge model passed as an object needs its tokenizer too (judge_params.tokenizer).")
    target = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(target).eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer
