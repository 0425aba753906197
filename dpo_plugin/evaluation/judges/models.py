"""The model a model-based judge runs on: a hub id, a local folder, or a model object with its tokenizer."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from ...errors import ConfigError


def _torch_dtype(dtype: str | None) -> Any:
    import torch

    if dtype is None:
        return None
    value = getattr(torch, str(dtype), None)
    if not isinstance(value, torch.dtype):
        raise ConfigError(f"judge_params.dtype {dtype!r} is not a torch dtype; use e.g. float32, bfloat16 or float16.")
    return value


def _source(name: str) -> str:
    """A local folder (expanded) or a hub id; a ConfigError when ``name`` looks like a path that does not exist."""
    path = os.path.expanduser(name)
    if os.path.exists(path):
        return path
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ConfigError(f"The judge model path {name!r} does not exist (a hub id looks like 'org/name').")
    return name


def load_judge_model(
    model: Any, tokenizer: Any, auto_class: str, *, device: str | None = None, dtype: str | None = None
) -> tuple[Any, Any]:
    """``(model, tokenizer)`` in eval mode.

    ``model`` and ``tokenizer`` are hub ids, local folders or objects (the tokenizer defaults to the
    model's folder). A loaded model goes to ``device`` (default: CUDA when available); a model object
    stays where it is unless ``device`` is given. ``dtype`` (e.g. ``"bfloat16"``) applies to both.
    Bad names are ConfigErrors raised before any weights load.
    """
    import torch
    import transformers

    torch_dtype = _torch_dtype(dtype)
    if model is None:
        raise ConfigError("This judge needs judge_params: {model: HUB_ID_OR_PATH}.")
    if isinstance(model, str):
        model = _source(model)
        tokenizer = model if tokenizer is None else tokenizer
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    elif tokenizer is None:
        raise ConfigError("A judge model passed as an object needs its tokenizer too (judge_params.tokenizer).")
    if isinstance(tokenizer, str):
        tokenizer = _source(tokenizer)
    try:
        if isinstance(tokenizer, str):
            tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer)
        if isinstance(model, str):
            model = getattr(transformers, auto_class).from_pretrained(model, dtype=torch_dtype)
    except (OSError, ValueError) as error:
        raise ConfigError(f"Cannot load the judge model or tokenizer: {error}") from None
    if device is not None or torch_dtype is not None:
        model = model.to(device=device, dtype=torch_dtype)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ConfigError("The judge's tokenizer has neither a pad token nor an EOS token to pad batches with.")
        tokenizer.pad_token = tokenizer.eos_token
    return model.eval(), tokenizer


@contextlib.contextmanager
def right_padded(tokenizer: Any) -> Iterator[Any]:
    """The tokenizer padding on the right and truncating on the left (so an answer's end is never cut)."""
    sides = tokenizer.padding_side, tokenizer.truncation_side
    tokenizer.padding_side, tokenizer.truncation_side = "right", "left"
    try:
        yield tokenizer
    finally:
        tokenizer.padding_side, tokenizer.truncation_side = sides
