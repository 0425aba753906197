"""The ``function`` judge: a Python callable ``(prompt, a, b) -> 0 | 1 | 0.5``.

A ``"module:attribute"`` reference in a config runs code, as ``trust_remote_code`` does: the module is
imported (its import-time code runs) and the function is called on every pair. The file it comes from is
logged before the import; a module is taken from the current directory only when its file is there
(never under the name of a standard-library module, never by putting the directory on ``sys.path``); the
attribute must be a callable that takes ``(prompt, a, b)``, or it is refused before it is called.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from ...errors import ConfigError
from .base import Judge, JudgeFailure, non_negative

logger = logging.getLogger(__name__)

#: After this many calls in a row without a verdict within ``timeout``, the judge is not called any more.
MAX_TIMEOUTS_IN_A_ROW = 3


def _module_file(name: str) -> Path | None:
    """Where ``import name`` would take the module from (None when it is nowhere on ``sys.path``)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    return Path(spec.origin) if spec is not None and spec.origin not in (None, "built-in", "frozen") else None


def _from_current_directory(name: str) -> tuple[ModuleType, Path] | None:
    """``name`` imported from a file in the current directory (``name.py`` or ``name/__init__.py``), without
    putting the directory on ``sys.path``; None when no such file is there, or the name is a standard module's."""
    top = name.partition(".")[0]
    if top in sys.stdlib_module_names:
        return None
    cwd = Path.cwd()
    path = next((p for p in (cwd / f"{top}.py", cwd / top / "__init__.py") if p.is_file()), None)
    if path is None:
        return None
    package = [str(path.parent)] if path.name == "__init__.py" else None
    spec = importlib.util.spec_from_file_location(top, path, submodule_search_locations=package)
    assert spec is not None and spec.loader is not None
    logger.warning("judge_params.function imports %s from the current directory: this runs its code.", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[top] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(top, None)
        raise
    return importlib.import_module(name), path


def _import_module(name: str) -> ModuleType:
    """``importlib.import_module``, also finding a module file in the current directory, as ``python -m`` does.

    The ``dpo-plugin`` script puts its own folder first on ``sys.path``, not the current directory
    (``accelerate launch -m dpo_plugin`` puts it there); a module found nowhere else is taken from a file
    in the current directory, so it never hides an installed package.
    """
    file = _module_file(name)
    if file is not None:
        logger.warning("judge_params.function imports %s from %s: this runs its code.", name, file)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name != name.partition(".")[0]:
            raise
        found = _from_current_directory(name)
        if found is None:
            raise
        return found[0]


def _takes_a_pair(target: Any) -> bool:
    """Whether ``target`` can be called as ``target(prompt, a, b)``."""
    try:
        inspect.signature(target).bind(None, None, None)
    except TypeError:
        return False
    except ValueError:  # no signature to read (some builtins): nothing says it cannot
        return True
    return True


def import_callable(reference: str) -> Callable[..., Any]:
    """``"package.module:attribute"`` → a callable taking ``(prompt, a, b)``, or a ConfigError saying what failed."""
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"judge_params.function must look like 'package.module:function', got {reference!r}.")
    try:
        target = getattr(_import_module(module_name), attribute)
    except ModuleNotFoundError as error:
        hint = (
            f" It is neither installed nor in the current directory ({Path.cwd()}): run from the module's folder, "
            "or put that folder on PYTHONPATH (PYTHONPATH=/path/to/folder dpo-plugin …)."
            if error.name and (module_name == error.name or module_name.startswith(f"{error.name}."))
            else ""
        )
        raise ConfigError(f"judge_params.function {reference!r} cannot be imported: {error}.{hint}") from None
    except (ImportError, AttributeError) as error:
        raise ConfigError(f"judge_params.function {reference!r} cannot be imported: {error}") from None
    if not callable(target) or inspect.isclass(target) or not _takes_a_pair(target):
        shape = f"a {type(target).__name__}" if not callable(target) or inspect.isclass(target) else "a callable"
        signature = ""
        try:
            signature = f" with the signature {inspect.signature(target)}"
        except (TypeError, ValueError):
            pass
        raise ConfigError(
            f"judge_params.function {reference!r} is {shape}{signature}, not a judge function: it must take "
            "(prompt, a, b) and return 0, 1 or 0.5. It was not called."
        )
    return target


class JudgeTimeout(JudgeFailure):
    """A call of the judge gave no verdict within its ``timeout``."""


def call_with_timeout(function: Callable[..., Any], args: tuple[Any, ...], timeout: float) -> Any:
    """``function(*args)`` in a daemon thread; a JudgeTimeout when it gives no result within ``timeout`` seconds
    (the call is abandoned, not stopped: Python cannot stop a thread)."""
    outcome: dict[str, Any] = {}
    done = threading.Event()

    def run() -> None:
        try:
            outcome["value"] = function(*args)
        except BaseException as error:  # handed to the caller, which reports it
            outcome["error"] = error
        finally:
            done.set()

    threading.Thread(target=run, daemon=True, name="dpo-plugin judge").start()
    if not done.wait(timeout):
        raise JudgeTimeout(f"no verdict within {timeout:g} s (judge_params.timeout)")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


class FunctionJudge(Judge):
    """Calls ``function(prompt, a, b)`` per pair: 0 when ``a`` is better, 1 when ``b`` is, 0.5 for a tie.

    ``function`` is a callable or a ``"module:attribute"`` reference (see the module docstring: it runs
    code). An exception, any other return value, or no answer within ``timeout`` seconds (0: wait for
    ever) is a judge failure with its reason recorded; after :data:`MAX_TIMEOUTS_IN_A_ROW` timeouts in a
    row the remaining pairs are failures without a call.
    """

    def __init__(self, function: str | Callable[..., Any] | None = None, timeout: float = 60.0):
        super().__init__()
        if isinstance(function, str):
            function = import_callable(function)
        if not callable(function):
            raise ConfigError(
                f"judge: function needs judge_params: {{function: 'package.module:function'}}, got {function!r}."
            )
        self.function = function
        self.timeout = non_negative("timeout", timeout)
        self.timeouts_in_a_row = 0

    def judge_pair(self, prompt: Any, first: str, second: str) -> Any:
        if not self.timeout:
            return self.function(prompt, first, second)
        if self.timeouts_in_a_row >= MAX_TIMEOUTS_IN_A_ROW:
            limit = f"{self.timeout:g} s {MAX_TIMEOUTS_IN_A_ROW} times in a row"
            raise JudgeFailure(f"not called: the judge gave no verdict within {limit}")
        try:
            verdict = call_with_timeout(self.function, (prompt, first, second), self.timeout)
        except JudgeTimeout:
            self.timeouts_in_a_row += 1
            raise
        self.timeouts_in_a_row = 0
        return verdict
