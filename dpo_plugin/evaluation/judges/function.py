"""The ``function`` judge: a Python callable ``(prompt, a, b) -> 0 | 1 | 0.5``."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from ...errors import ConfigError
from .base import Judge


def import_callable(reference: str) -> Callable[..., Any]:
    """``"package.module:attribute"`` → the object, with a ConfigError saying what failed."""
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"judge_params.function must look like 'module:attribute', got {reference!r}.")
    try:
        target = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise ConfigError(f"judge_params.function {reference!r} cannot be imported: {error}") from None
    if not callable(target):
        raise ConfigError(f"judge_params.function {reference!r} is not callable.")
    return target


class FunctionJudge(Judge):
    """Calls ``function(prompt, a, b)`` per pair: 0 when ``a`` is better, 1 when ``b`` is, 0.5 for a tie."""

    def __init__(self, function: str | Callable[..., Any] | None = None):
        super().__init__()
        if function is None:
            raise ConfigError("judge: function needs judge_params: {function: 'module:attribute'}.")
        self.function = import_callable(function) if isinstance(function, str) else function

    def judge_pair(self, prompt: Any, first: str, second: str) -> Any:
        return self.function(prompt, first, second)
