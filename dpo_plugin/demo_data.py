"""The demo's verifiable preference data: arithmetic questions with a correct, fixed-format chosen answer.

Every prompt asks for a sum or difference of two-digit numbers. The chosen answer is correct and
in the required format (``The answer is 42.``); the rejected answer is wrong in that format, or
rambles, or gives the number without the format. :func:`judge_correct` verifies answers, so the
win-rate check needs no model judge:
``judge: function`` with ``judge_params: {function: "dpo_plugin.demo_data:judge_correct"}``.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

ANSWER = re.compile(r"The answer is (-?\d+)\.")
QUESTION = re.compile(r"What is (\d+) ([+-]) (\d+)\?")
DATA_DIR = Path(__file__).parent / "data" / "demo"


def question(a: int, op: str, b: int) -> str:
    return f"What is {a} {op} {b}?"


def solve(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b


def answer(value: int) -> str:
    return f"The answer is {value}."


def _rejected(a: int, op: str, b: int, rng: random.Random) -> str:
    truth = solve(a, op, b)
    kind = rng.choice(("wrong", "wrong", "ramble", "bare"))
    if kind == "wrong":
        return answer(truth + rng.choice((-11, -10, -2, -1, 1, 2, 10, 11)))
    if kind == "ramble":
        return (
            f"Well, {a} {op} {b} is an interesting question. Numbers can be combined in many ways, and it is "
            "always worth thinking carefully before answering, so let us consider it step by step."
        )
    return f"{a} {op} {b} = {truth}"


def make_pairs(questions: list[tuple[int, str, int]], rng: random.Random) -> list[dict[str, Any]]:
    return [
        {
            "prompt": [{"role": "user", "content": question(a, op, b)}],
            "chosen": [{"role": "assistant", "content": answer(solve(a, op, b))}],
            "rejected": [{"role": "assistant", "content": _rejected(a, op, b, rng)}],
        }
        for a, op, b in questions
    ]


def generate(n_train: int = 320, n_eval: int = 40, seed: int = 0) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Train and eval pairs with disjoint questions, deterministic for a seed."""
    rng = random.Random(seed)
    pool = [(a, op, b) for a in range(10, 100) for b in range(10, 100) for op in "+-" if op == "+" or a > b]
    rng.shuffle(pool)
    eval_questions, train_questions = pool[:n_eval], pool[n_eval : n_eval + n_train]
    return make_pairs(train_questions, rng), make_pairs(eval_questions, rng)


def write(directory: Path = DATA_DIR, **kwargs: Any) -> tuple[Path, Path]:
    """Write ``train.jsonl`` and ``test.jsonl`` (the split names TRL's scripts expect)."""
    train, evaluation = generate(**kwargs)
    directory.mkdir(parents=True, exist_ok=True)
    paths = directory / "train.jsonl", directory / "test.jsonl"
    for path, rows in zip(paths, (train, evaluation)):
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return paths


def _question_of(prompt: Any) -> tuple[int, str, int] | None:
    text = prompt if isinstance(prompt, str) else " ".join(m.get("content", "") for m in prompt if m.get("role") == "user")
    match = QUESTION.search(text)
    return (int(match.group(1)), match.group(2), int(match.group(3))) if match else None


def is_correct(prompt: Any, completion: str) -> bool:
    """The completion is exactly ``The answer is N.`` with N the true result."""
    parsed = _question_of(prompt)
    match = ANSWER.fullmatch(completion.strip())
    return bool(parsed and match and int(match.group(1)) == solve(*parsed))


def judge_correct(prompt: Any, a: str, b: str) -> float:
    """0 when only ``a`` is correct and in format, 1 when only ``b`` is, 0.5 when both or neither are."""
    a_ok, b_ok = is_correct(prompt, a), is_correct(prompt, b)
    if a_ok == b_ok:
        return 0.5
    return 0.0 if a_ok else 1.0
