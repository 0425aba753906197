"""Each data-quality finding on a dataset built to have it, with the exact counts and rows."""

from __future__ import annotations

from datasets import Dataset

from dpo_plugin.data_quality import check_data, ensure_clean, token_findings
from dpo_plugin.errors import ConfigError

import pytest


def _clean(n=120):
    # chosen longer in exactly half the pairs: no length bias
    return [{"prompt": f"Question number {i}?", "chosen": f"Answer {i}" + ("!" * (i % 2 * 5)), "rejected": f"Reply {i}.."} for i in range(n)]


def _codes(report):
    return {f.code: f for f in report.findings}


def test_clean_data_has_no_findings():
    report = check_data(Dataset.from_list(_clean()))
    assert report.findings == [] and report.ok and report.rows == 120


def test_missing_identical_and_duplicates():
    rows = _clean()
    rows[3]["chosen"] = ""
    rows[5]["rejected"] = rows[5]["chosen"]
    rows[7] = dict(rows[6])  # exact duplicate of row 6
    rows[9] = {"prompt": rows[8]["prompt"].upper(), "chosen": rows[8]["chosen"] + " ", "rejected": rows[8]["rejected"]}
    codes = _codes(check_data(Dataset.from_list(rows)))
    assert codes["missing_field"].count == 1 and codes["missing_field"].examples[0]["row"] == 3
    assert codes["identical_pair"].count == 1 and codes["identical_pair"].examples[0]["row"] == 5
    assert codes["duplicate_pair"].count == 1 and codes["duplicate_pair"].examples[0]["row"] == 7
    assert codes["near_duplicate"].count == 1 and codes["near_duplicate"].examples[0]["row"] == 9
    assert codes["missing_field"].severity == codes["identical_pair"].severity == "error"


def test_length_bias_and_too_few_and_diversity():
    rows = [{"prompt": "Same?", "chosen": "a long and detailed answer " + str(i), "rejected": "short"} for i in range(30)]
    codes = _codes(check_data(Dataset.from_list(rows)))
    assert codes["length_bias"].count == 30 and "100%" in codes["length_bias"].message
    assert codes["too_few_pairs"].count == 30 and codes["too_few_pairs"].severity == "warning"
    assert codes["low_prompt_diversity"].count == 1
    assert check_data(Dataset.from_list(rows[:5])).findings[0].code == "too_few_pairs"  # 5 pairs: no bias test
    assert "length_bias" not in _codes(check_data(Dataset.from_list(rows[:5])))


def test_conversational_format_errors():
    good = {"prompt": [{"role": "user", "content": "hi"}], "chosen": [{"role": "assistant", "content": "a"}], "rejected": [{"role": "assistant", "content": "b"}]}
    bad_role = {**good, "chosen": [{"role": "robot", "content": "a"}]}
    not_assistant = {**good, "rejected": [{"role": "user", "content": "b"}]}
    report = check_data(Dataset.from_list([good] * 2 + [bad_role, not_assistant]))
    messages = {f.message: f for f in report.findings if f.code == "format_error"}
    assert messages["Conversational format error: chosen has an unknown role 'robot'."].examples[0]["row"] == 2
    assert messages["Conversational format error: rejected does not end with an assistant message."].examples[0]["row"] == 3
    assert not report.ok


def test_implicit_prompt_conversational():
    row = {"chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "yes"}],
           "rejected": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "no"}]}  # fmt: skip
    report = check_data(Dataset.from_list([row] * 3))
    assert report.ok and _codes(report)["duplicate_pair"].count == 2


def test_token_findings_with_the_byte_tokenizer(tokenizer):
    # byte-level: one token per byte; standard rows get the EOS token appended to each completion
    rows = [
        {"prompt": "x" * 10, "chosen": "y" * 5, "rejected": "z" * 3},   # 10 + 6 = 16 tokens: fits 20
        {"prompt": "x" * 20, "chosen": "y", "rejected": "z"},           # prompt fills max_length: dropped
        {"prompt": "x" * 15, "chosen": "y" * 9, "rejected": "z"},       # 15 + 10 = 25 > 20: truncated
    ]  # fmt: skip
    codes = _codes(check_data(Dataset.from_list(rows), tokenizer=tokenizer, max_length=20))
    assert codes["prompt_too_long"].count == 1 and codes["prompt_too_long"].examples[0]["row"] == 1
    assert codes["truncated_completion"].count == 1 and codes["truncated_completion"].examples[0] == {"row": 2, "excerpt": "15+10 tokens"}
    assert token_findings([5], [5], [5], max_length=20) == []


def test_ensure_clean_and_table():
    rows = _clean()
    rows[0]["chosen"] = rows[0]["rejected"]
    report = check_data(Dataset.from_list(rows))
    with pytest.raises(ConfigError, match="identical_pair: 1.*allow_data_errors"):
        ensure_clean(report)
    ensure_clean(report, allow_errors=True)
    table = report.format_table()
    assert "error" in table and "identical_pair" in table and "row 0" in table
    assert report.to_dict()["ok"] is False
