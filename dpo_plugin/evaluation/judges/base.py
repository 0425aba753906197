"""The judge contract: batched verdicts, every failure recorded with its reason, never a silent win.

A judge is called ``judge(prompts, first, second)`` and returns one verdict per pair: 0 (``first``
is better), 1 (``second`` is better), 0.5 (a tie) or None (the judge failed on that pair; its
``errors`` list says why). A registered judge is a factory: ``factory(**judge_params)`` → judge.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any

from ...errors import ConfigError

logger = logging.getLogger(__name__)

FIRST, SECOND, TIE = 0.0, 1.0, 0.5
VERDICTS = (FIRST, TIE, SECOND)

COMPARISON_TEMPLATE = (
    "Which response answers the question better? Answer with A or B.\n\n"
    "Question:\n{prompt}\n\nResponse A:\n{first}\n\nResponse B:\n{second}\n\nThe better response is"
)
"""The question the ``llm`` and ``openai`` judges ask: response A is ``first``, B is ``second``."""


def as_verdict(value: Any) -> float | None:
    """``value`` as a verdict (0.0, 0.5 or 1.0) when it is one, else None (booleans and NaN are not verdicts)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        return None
    number = float(value)
    return number if number in VERDICTS else None


@dataclass(frozen=True)
class NotAVerdict:
    """A value a judge returned that is neither a verdict nor a failure (None/NaN), kept as its description."""

    description: str


def read_verdict(value: Any) -> float | NotAVerdict:
    """``value`` read before any arithmetic: 0.0, 0.5 or 1.0 for a verdict, NaN for a judge failure (None or
    NaN), else a :class:`NotAVerdict` (True, "1", 2, … are not verdicts). A NotAVerdict reads as itself."""
    verdict = as_verdict(value)
    if verdict is not None:
        return verdict
    if value is None or (isinstance(value, Real) and not isinstance(value, bool) and math.isnan(value)):
        return math.nan
    if isinstance(value, NotAVerdict):
        return value
    return NotAVerdict(f"{value!r} ({type(value).__name__})")


def compare_scores(first: float, second: float, tie_margin: float) -> float | None:
    """Verdict from two scores where higher is better: a tie when ``|first − second| ≤ tie_margin``.

    None when either score is not finite (an overflowing model must not hand a win to one side).
    """
    if not (math.isfinite(first) and math.isfinite(second)):
        return None
    if abs(first - second) <= tie_margin:
        return TIE
    return FIRST if first > second else SECOND


def non_negative(name: str, value: Any) -> float:
    """``judge_params.<name>`` as a float, or a ConfigError when it is negative or not a number."""
    if isinstance(value, bool) or not isinstance(value, Real) or not value >= 0:
        raise ConfigError(f"judge_params.{name} must be a number >= 0, got {value!r}.")
    return float(value)


def positive_int(name: str, value: Any) -> int:
    """``judge_params.<name>``, or a ConfigError when it is not an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"judge_params.{name} must be an integer >= 1, got {value!r}.")
    return value


def check_template(template: Any) -> str:
    """A comparison template with ``{prompt}``, ``{first}`` and ``{second}`` (and no other fields),
    else a ConfigError."""
    if not isinstance(template, str) or not all(f"{{{field}}}" in template for field in ("prompt", "first", "second")):
        raise ConfigError("judge_params.template must be a string containing {prompt}, {first} and {second}.")
    try:
        template.format(prompt="", first="", second="")
    except (KeyError, IndexError, ValueError) as error:
        raise ConfigError(
            f"judge_params.template has a field other than {{prompt}}, {{first}}, {{second}} ({error!r}); "
            "write literal braces as {{ and }}."
        ) from None
    return template


def prompt_text(prompt: Any) -> str:
    """The text of a prompt given as a string or as chat messages (``role: content`` lines)."""
    if isinstance(prompt, list):
        return "\n".join(f"{m.get('role', 'user')}: {m.get('content', '')}" for m in prompt)
    return str(prompt)


class JudgeFailure(Exception):
    """Raised by :meth:`Judge.judge_pair` for a comparison it could not make; the message is the reported reason."""


class Judge:
    """Base class of the built-in judges: ``judge(prompts, first, second)`` → verdicts; ``errors`` explains each None.

    Subclasses implement :meth:`judge_pair` (one comparison; an exception or a value that is not a
    verdict becomes a recorded failure) or override :meth:`judge_batch` (and call :meth:`fail` for
    each None they return).
    """

    def __init__(self) -> None:
        self.errors: list[str] = []

    def __call__(self, prompts: Sequence[Any], first: Sequence[str], second: Sequence[str]) -> list[float | None]:
        if not len(prompts) == len(first) == len(second):
            raise ValueError(
                f"A judge compares pairs: got {len(prompts)} prompts, {len(first)} first "
                f"and {len(second)} second answers."
            )
        return self.judge_batch(list(prompts), list(first), list(second))

    def judge_batch(self, prompts: list[Any], first: list[str], second: list[str]) -> list[float | None]:
        """One verdict per pair; by default :meth:`judge_pair` pair by pair, with a progress bar."""
        from tqdm.auto import tqdm

        pairs = tqdm(zip(prompts, first, second), total=len(prompts), desc=self.progress_label, leave=False)
        return [self.safe_pair(prompt, a, b) for prompt, a, b in pairs]

    @property
    def progress_label(self) -> str:
        """The progress bar's label: ``Judging (FunctionJudge)``."""
        return f"Judging ({type(self).__name__})"

    def judge_pair(self, prompt: Any, first: str, second: str) -> Any:
        """0 when ``first`` is better, 1 when ``second`` is, 0.5 for a tie."""
        raise NotImplementedError(f"{type(self).__name__} must implement judge_pair or judge_batch.")

    def fail(self, reason: str) -> None:
        """Record a judge failure (the verdict it explains is None)."""
        self.errors.append(reason)
        logger.warning("Judge failure (%s): %s", type(self).__name__, reason)

    def compare(
        self, first_scores: Sequence[float], second_scores: Sequence[float], tie_margin: float
    ) -> list[float | None]:
        """Verdicts from per-pair scores (higher is better, see :func:`compare_scores`);
        non-finite scores are failures."""
        verdicts = [compare_scores(a, b, tie_margin) for a, b in zip(first_scores, second_scores)]
        for index, result in enumerate(verdicts):
            if result is None:
                self.fail(f"pair {index}: non-finite scores {first_scores[index]} and {second_scores[index]}")
        return verdicts

    def safe_pair(self, prompt: Any, first: str, second: str) -> float | None:
        """:meth:`judge_pair` with every exception and every non-verdict turned into a recorded failure."""
        try:
            value = self.judge_pair(prompt, first, second)
        except JudgeFailure as failure:
            self.fail(str(failure))
            return None
        except Exception as error:  # a failing judge is reported, never a win
            self.fail(f"{type(error).__name__}: {error}")
            return None
        result = as_verdict(value)
        if result is None:
            self.fail(f"returned {value!r}; a verdict is 0 (first better), 1 (second better) or 0.5 (tie)")
        return result
