"""The demo's verifiable preference data and its correctness judge."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from dpo_plugin.demo import arithmetic as demo_data
from dpo_plugin.errors import ConfigError
from dpo_plugin.evaluation.judges.function import FunctionJudge

SHIPPED = Path(demo_data.__file__).parent / "data"
SUM = re.compile(r"^What is (\d+) \+ (\d+)\?$")


def _operands(pair):
    a, b = SUM.fullmatch(pair["prompt"][0]["content"]).groups()
    return int(a), int(b)


def _read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_generation_is_deterministic_and_seeded():
    assert demo_data.generate(seed=0) == demo_data.generate(seed=0)
    assert demo_data.generate(seed=0) != demo_data.generate(seed=1)


def test_shipped_files_are_what_the_generator_writes(tmp_path):
    written = demo_data.write(tmp_path)
    assert [p.name for p in written] == ["train.jsonl", "test.jsonl"]
    for path in written:
        assert path.read_bytes() == (SHIPPED / path.name).read_bytes()


def test_pairs_are_conversational_with_correct_chosen_and_worse_rejected():
    train, held_out = demo_data.generate()
    assert (len(train), len(held_out)) == (320, 40)
    kinds = set()
    for pair in train + held_out:
        assert [m["role"] for m in pair["prompt"]] == ["user"]
        assert [m["role"] for m in pair["chosen"]] == [m["role"] for m in pair["rejected"]] == ["assistant"]
        a, b = _operands(pair)
        assert 2 <= a <= 30 and 2 <= b <= 30
        chosen, rejected = pair["chosen"][0]["content"], pair["rejected"][0]["content"]
        assert chosen == f"The answer is {a + b}."
        assert rejected != chosen
        assert demo_data.is_correct(pair["prompt"], chosen) and not demo_data.is_correct(pair["prompt"], rejected)
        assert rejected.startswith("The answer is")
        if rejected == "The answer is...":
            kinds.add("evasive")
        elif rejected == f"The answer is {a} + {b} = {a + b}.":
            kinds.add("other format")
        else:
            kinds.add("wrong")
            assert int(rejected[len("The answer is ") : -1]) in {a + b + d for d in (-10, -2, -1, 1, 2, 10)}
    assert kinds == {"wrong", "evasive", "other format"}


def test_train_and_held_out_questions_are_disjoint_and_unique():
    train, held_out = demo_data.generate()
    train_q = [_operands(p) for p in train]
    held_q = [_operands(p) for p in held_out]
    assert len(set(train_q)) == len(train_q) and len(set(held_q)) == len(held_q)
    assert not set(train_q) & set(held_q)
    shipped_train = {_operands(p) for p in _read(SHIPPED / "train.jsonl")}
    assert not shipped_train & {_operands(p) for p in _read(SHIPPED / "test.jsonl")}


def test_too_many_pairs_for_the_operand_range_is_an_error():
    with pytest.raises(ConfigError, match="need more than the 4 questions"):
        demo_data.generate(n_train=4, n_eval=1, low=2, high=3)


MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 17 + 25?"}]


@pytest.mark.parametrize("prompt", ["What is 17 + 25?", "user: What is 17 + 25?", MESSAGES])
@pytest.mark.parametrize(
    ("a", "b", "verdict"),
    [
        ("The answer is 42.", "The answer is 41.", 0.0),
        ("42", "The answer is 42.", 1.0),
        ("  The answer is 42.\n", "To add 17 and 25, we need to think step by step.", 0.0),
        ("The answer is 42.", "The answer is 42.", 0.5),
        ("The answer is 42", "17 + 25 = 42", 0.5),
        ("The answer is 42. Because 17 + 25 = 42.", "The answer is 42.", 1.0),
        ("The answer is 420.", "", 0.5),
    ],
)
def test_judge_prefers_the_correct_answer_in_the_required_format(prompt, a, b, verdict):
    assert demo_data.judge_correct(prompt, a, b) == verdict


def test_judge_without_a_question_ties():
    assert demo_data.judge_correct("Tell me a joke.", "The answer is 4.", "no") == 0.5
    assert demo_data.judge_correct([{"role": "assistant", "content": "What is 2 + 2?"}], "The answer is 4.", "x") == 0.5


def test_judge_through_the_function_judge_on_held_out_prompts():
    _, held_out = demo_data.generate()
    prompts = [p["prompt"] for p in held_out[:3]]
    chosen = [p["chosen"][0]["content"] for p in held_out[:3]]
    rejected = [p["rejected"][0]["content"] for p in held_out[:3]]
    judge = FunctionJudge("dpo_plugin.demo.arithmetic:judge_correct")
    assert judge(prompts, chosen, rejected) == [0.0, 0.0, 0.0]
    assert judge(prompts, rejected, chosen) == [1.0, 1.0, 1.0]


def test_shipped_data_passes_the_projects_data_quality_check():
    from dpo_plugin.data_checks import check_data

    for name in ("train.jsonl", "test.jsonl"):
        report = check_data(_read(SHIPPED / name), min_pairs=40)
        assert [(f.code, f.severity) for f in report.findings] == []
