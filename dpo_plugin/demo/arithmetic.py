"""The demo's verifiable preference data: small sums with a correct, fixed-format chosen answer.

Every prompt asks ``What is a + b?`` (operands 2…30). The chosen answer is correct and in the
required format (``The answer is 42.``). The rejected answer starts the same way but is wrong
(half of the pairs), evasive (``The answer is...``, shorter than the chosen one) or in another
format (``The answer is 17 + 25 = 42.``, longer), so length does not tell the sides apart and the
preference signal lies only in what follows ``The answer is``, a start the base model never
produces (it explains: ``To add 17 and 25, …``). Pure DPO therefore lowers the rejected answers
without ever producing the chosen ones; an SFT term on the chosen answers
(``loss_type: [sigmoid, sft]``) is what teaches them. :func:`judge_correct` verifies answers, so
the win-rate check needs no model judge: ``judge: function`` with
``judge_params: {function: "dpo_plugin.demo.arithmetic:judge_correct"}``."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any, NamedTuple

from ..errors import ConfigError

DATA_DIR = Path(__file__).parent / "data"
ANSWER = re.compile(r"The answer is (\d+)\.")
QUESTION = re.compile(r"What is (\d+) \+ (\d+)\?")
OFFSETS = (-10, -2, -1, 1, 2, 10)
EVASIVE = "The answer is..."


class Question(NamedTuple):
    """``a + b``."""

    a: int
    b: int

    @property
    def text(self) -> str:
        return f"What is {self.a} + {self.b}?"

    @property
    def solution(self) -> int:
        return self.a + self.b


def answer(value: int) -> str:
    """The required format of an answer."""
    return f"The answer is {value}."


def all_questions(low: int = 2, high: int = 30) -> list[Question]:
    """Every ``a + b`` with operands in ``[low, high]``, in a fixed order."""
    return [Question(a, b) for a in range(low, high + 1) for b in range(low, high + 1)]


def rejected_answer(question: Question, rng: random.Random) -> str:
    """A worse answer with the chosen answer's start: a wrong sum (half the time), evasive, or in another format."""
    kind = rng.choice(("wrong", "wrong", "evasive", "other format"))
    if kind == "wrong":
        return answer(question.solution + rng.choice([o for o in OFFSETS if question.solution + o >= 0]))
    if kind == "evasive":
        return EVASIVE
    return f"The answer is {question.a} + {question.b} = {question.solution}."


def preference_pair(question: Question, rng: random.Random) -> dict[str, Any]:
    """One pair in TRL's conversational format."""
    return {
        "prompt": [{"role": "user", "content": question.text}],
        "chosen": [{"role": "assistant", "content": answer(question.solution)}],
        "rejected": [{"role": "assistant", "content": rejected_answer(question, rng)}],
    }


def generate(
    n_train: int = 320, n_eval: int = 40, seed: int = 0, low: int = 2, high: int = 30
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Train and held-out pairs on disjoint questions, the same for the same arguments."""
    rng = random.Random(seed)
    pool = all_questions(low, high)
    if n_train + n_eval > len(pool):
        raise ConfigError(
            f"{n_train} + {n_eval} pairs need more than the {len(pool)} questions with operands in [{low}, {high}]."
        )
    rng.shuffle(pool)
    held_out, train = pool[:n_eval], pool[n_eval : n_eval + n_train]
    return [preference_pair(q, rng) for q in train], [preference_pair(q, rng) for q in held_out]


def write(directory: Path = DATA_DIR, **kwargs: Any) -> tuple[Path, Path]:
    """Write ``train.jsonl`` and ``test.jsonl`` (the held-out split under the name TRL's scripts use)."""
    train, held_out = generate(**kwargs)
    directory.mkdir(parents=True, exist_ok=True)
    paths = directory / "train.jsonl", directory / "test.jsonl"
    for path, rows in zip(paths, (train, held_out)):
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return paths


def parse_question(prompt: str | list[dict[str, str]]) -> Question | None:
    """The question in a prompt (a string or a list of chat messages; the last user message counts)."""
    if isinstance(prompt, str):
        text = prompt
    else:
        text = next((m.get("content", "") for m in reversed(prompt) if m.get("role") == "user"), "")
    match = QUESTION.search(text)
    return Question(int(match.group(1)), int(match.group(2))) if match else None


def is_correct(prompt: str | list[dict[str, str]], completion: str) -> bool:
    """The completion is exactly ``The answer is N.`` (surrounding whitespace aside), with N the true result."""
    question = parse_question(prompt)
    match = ANSWER.fullmatch(completion.strip())
    return question is not None and match is not None and int(match.group(1)) == question.solution


def judge_correct(prompt: str | list[dict[str, str]], a: str, b: str) -> float:
    """0 when only ``a`` is correct and in format, 1 when only ``b`` is, 0.5 when both or neither are."""
    a_ok, b_ok = is_correct(prompt, a), is_correct(prompt, b)
    if a_ok == b_ok:
        return 0.5
    return 0.0 if a_ok else 1.0
