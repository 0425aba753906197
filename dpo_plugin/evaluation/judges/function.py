"""The ``function`` judge: a Python callable ``(prompt, a, b) -> 0 | 1 | 0.5``."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from typing import Any

from ...errors import ConfigError
from .base import Judge


def _import_module(name: str) -> Any:
    """``importlib.import_module``, also finding a module in the current directory, as ``python -m`` does.

    The ``dpo-plugin`` script puts its own folder first on ``sys.path``, not the current directory
    (``accelerate launch -m dpo_plugin`` puts it there); when the module is not found otherwise, the
    current directory is added, last, so it never hides an installed package.
    """
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        cwd = os.getcwd()
        top = name.partition(".")[0]
        if error.name != top or any(os.path.abspath(entry or ".") == cwd for entry in sys.path):
            raise
        sys.path.append(cwd)
        return importlib.import_module(name)


def import_callable(reference: str) -> Callable[..., Any]:
    """``"package.module:attribute"`` → the callable, or a ConfigError saying what failed."""
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"judge_params.function must look like 'package.module:function', got {reference!r}.")
    try:
        target = getattr(_import_module(module_name), attribute)
    except ModuleNotFoundError as error:
        hint = (
            f" It is neither installed nor in the current directory ({os.getcwd()}): run from the module's folder, "
            "or put that folder on PYTHONPATH (PYTHONPATH=/path/to/folder dpo-plugin …)."
            if error.name and (module_name == error.name or module_name.startswith(f"{error.name}."))
            else ""
        )
        raise ConfigError(f"judge_params.function {reference!r} cannot be imported: {error}.{hint}") from None
    except (ImportError, AttributeError) as error:
        raise ConfigError(f"judge_params.function {reference!r} cannot be imported: {error}") from None
    if not callable(target):
        raise ConfigError(f"judge_params.function {reference!r} is a {type(target).__name__}, not a callable.")
    return target


class FunctionJudge(Judge):
    """Calls ``function(prompt, a, b)`` per pair: 0 when ``a`` is better, 1 when ``b`` is, 0.5 for a tie.

    ``function`` is a callable or a ``"module:attribute"`` reference. An exception, or any other
    return value, is a judge failure with its reason recorded.
    """

    def __init__(self, function: str | Callable[..., Any] | None = None):
        super().__init__()
        if isinstance(function, str):
            function = import_callable(function)
        if not callable(function):
            raise ConfigError(
                f"judge: function needs judge_params: {{function: 'package.module:function'}}, got {function!r}."
            )
        self.function = function

    def judge_pair(self, prompt: Any, first: str, second: str) -> Any:
        return self.function(prompt, first, second)
