"""The judge contract: batched verdicts, failures recorded with their reason, never a silent win."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

logger = logging.getLogger(__name__)

VERDICTS = (0.0, 0.5, 1.0)


def verdict(value: Any) -> float | None:
    """A valid verdict as a float (0: first better, 1: second better, 0.5: tie), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if float(value) in VERDICTS else None


class JudgeFailure(Exception):
    """Raised by a judge for one comparison it could not make; the message is the reason reported."""


class Judge:
    """Base class: ``judge(prompts, first, second)`` → one verdict per pair; ``errors`` explains every None.

    Subclasses implement :meth:`judge_pair` (one comparison) or override :meth:`judge_batch`.
    """

    def __init__(self) -> None:
        self.errors: list[str] = []

    def __call__(self, prompts: Sequence[Any], first: Sequence[str], second: Sequence[str]) -> list[float | None]:
        if not len(prompts) == len(first) == len(second):
            raise ValueError(f"judge: {len(prompts)} prompts, {len(first)} first and {len(second)} second answers.")
        return self.judge_batch(list(prompts), list(first), list(second))

    def judge_batch(self, prompts: list[Any], first: list[str], second: list[str]) -> list[float | None]:
        return [self._safe(prompt, a, b) for prompt, a, b in zip(prompts, first, second)]

    def judge_pair(self, prompt: Any, first: str, second: str) -> Any:
        raise NotImplementedError

    def fail(self, reason: str) -> None:
        """Record a judge failure (its verdict is None)."""
        self.errors.append(reason)
        logger.warning("Judge failure: %s", reason)

    def _safe(self, prompt: Any, first: str, second: str) -> float | None:
        try:
            value = self.judge_pair(prompt, first, second)
        except JudgeFailure as failure:
            self.fail(str(failure))
            return None
        except Exception as error:  # a failing judge is reported, never a win
            self.fail(f"{type(error).__name__}: {error}")
            return None
        result = verdict(value)
        if result is None:
            self.fail(f"returned {value!r}; a verdict is 0 (first better), 1 (second better) or 0.5 (tie)")
        return result


def prompt_text(prompt: Any) -> str:
    """The text of a prompt given as a string or as chat messages."""
    if isinstance(prompt, list):
        return "\n".join(f"{m.get('role', 'user')}: {m.get('content', '')}" for m in prompt)
    return str(prompt)


def conversation(tokenizer: Any, prompt: Any, completion: str) -> str:
    """Prompt + completion as one text, through the tokenizer's chat template when it has one."""
    if getattr(tokenizer, "chat_template", None):
        messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": str(prompt)}]
        return tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": completion}], tokenize=False)
    return prompt_text(prompt) + completion
