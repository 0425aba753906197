"""Each data-quality finding on a dataset built to have it, with the exact counts and rows built in.

Token counts are worked out by hand for the tiny byte-level tokenizer: one token per UTF-8 byte,
one per special token (``<|user|>``, ``<|assistant|>``, ``<|end|>`` = EOS), no BOS.
"""

from __future__ import annotations

import json
import logging
import math
from types import SimpleNamespace

import pytest
from datasets import Dataset, Features, Value
from trl.data_utils import extract_prompt

from dpo_plugin.data_checks import check_data, token_lengths
from dpo_plugin.data_quality import Pair, ensure_clean, token_findings
from dpo_plugin.data_quality import read_pairs as read_pairs_with
from dpo_plugin.demo.arithmetic import DATA_DIR
from dpo_plugin.errors import ConfigError
from dpo_plugin.preference_data import load_preference_data

EOS = "<|end|>"
TEXT_FEATURES = Features({"prompt": Value("string"), "chosen": Value("string"), "rejected": Value("string")})


def read_pairs(dataset):
    """The pairs as TRL reads them (TRL's extract_prompt for implicit prompts)."""
    return read_pairs_with(dataset, extract_prompt)


def _balanced(n: int = 120, prompt=lambda i: f"Question number {i}?") -> list[dict[str, str]]:
    """Distinct pairs; chosen is longer for odd i only ("Answer 7!!!!!" vs "Reply 7.."), so there is no length bias."""
    return [
        {"prompt": prompt(i), "chosen": f"Answer {i}" + "!" * (5 * (i % 2)), "rejected": f"Reply {i}.."}
        for i in range(n)
    ]


def _chat(*turns: tuple[str, str]) -> list[dict[str, str]]:
    return [{"role": role, "content": content} for role, content in turns]


def _by_code(report) -> dict[str, object]:
    codes = [f.code for f in report.findings]
    assert len(codes) == len(set(codes)), codes
    return {f.code: f for f in report.findings}


def _rows(finding) -> list[int]:
    return [example["row"] for example in finding.examples]


def _excerpts(finding) -> list[str]:
    return [example["excerpt"] for example in finding.examples]


def _two_sided_binomial_p(k: int, n: int) -> float:
    """Exact two-sided sign-test p-value for k of n at ½ (the distribution is symmetric)."""
    tail = sum(math.comb(n, j) for j in range(max(k, n - k), n + 1)) / 2**n
    return min(1.0, 2 * tail)


def test_clean_text_data_has_no_findings():
    report = check_data(Dataset.from_list(_balanced()))
    assert report.findings == [] and report.ok and report.rows == 120
    assert report.format_table() == "120 pairs: no problems found."
    assert report.to_dict() == {"rows": 120, "ok": True, "errors": 0, "warnings": 0, "findings": [], "notes": []}


def test_clean_conversational_data_with_a_tokenizer_has_no_findings(tokenizer):
    rows = [
        {
            "prompt": _chat(("user", r["prompt"])),
            "chosen": _chat(("assistant", r["chosen"])),
            "rejected": _chat(("assistant", r["rejected"])),
        }
        for r in _balanced()
    ]
    assert check_data(Dataset.from_list(rows), tokenizer=tokenizer, max_length=64).findings == []


def test_the_demo_training_data_is_clean():
    assert check_data(load_preference_data(str(DATA_DIR), split="train")).findings == []


def test_missing_and_empty_fields():
    rows = _balanced()
    rows[3]["chosen"] = ""
    rows[4]["rejected"] = "   "
    rows[10]["prompt"] = None
    report = check_data(Dataset.from_list(rows))
    assert set(_by_code(report)) == {"missing_field"}
    missing = _by_code(report)["missing_field"]
    assert (missing.severity, missing.count, _rows(missing)) == ("error", 3, [3, 4, 10])
    assert _excerpts(missing) == ["chosen is empty", "rejected is blank", "prompt is missing"]
    assert not report.ok


def test_identical_and_near_identical_pairs():
    rows = _balanced()
    rows[5]["rejected"] = rows[5]["chosen"]
    rows[6]["rejected"] = rows[6]["chosen"].upper() + " !"
    found = _by_code(check_data(Dataset.from_list(rows)))
    assert set(found) == {"identical_pair", "near_identical_pair"}
    assert (found["identical_pair"].severity, found["identical_pair"].count, _rows(found["identical_pair"])) == (
        "error",
        1,
        [5],
    )
    near = found["near_identical_pair"]
    assert (near.severity, near.count, _rows(near), _excerpts(near)) == ("warning", 1, [6], ["Answer 6"])


def test_duplicates_near_duplicates_and_contradictions():
    rows = _balanced()
    rows[7] = dict(rows[6])
    rows[9] = {"prompt": rows[8]["prompt"].upper(), "chosen": rows[8]["chosen"] + " ", "rejected": rows[8]["rejected"]}
    rows[11] = {"prompt": rows[10]["prompt"], "chosen": rows[10]["rejected"], "rejected": rows[10]["chosen"]}
    rows[12] = dict(rows[9])  # an exact copy of the near duplicate: a duplicate, not another near duplicate
    found = _by_code(check_data(Dataset.from_list(rows)))
    assert set(found) == {"duplicate_pair", "near_duplicate", "contradictory_pair"}
    assert all(f.severity == "warning" for f in found.values())
    duplicate, near, contradiction = found["duplicate_pair"], found["near_duplicate"], found["contradictory_pair"]
    assert (duplicate.count, _excerpts(duplicate)) == (2, ["same as row 6: Answer 6", "same as row 9: Answer 8"])
    assert (near.count, _rows(near), _excerpts(near)) == (1, [9], ["like row 8: Answer 8"])
    assert (contradiction.count, _rows(contradiction), _excerpts(contradiction)) == (
        1,
        [11],
        ["swaps row 10: Reply 10.."],
    )


def test_conversational_format_errors():
    def row(prompt, chosen, rejected):
        return {"prompt": _chat(*prompt), "chosen": _chat(*chosen), "rejected": _chat(*rejected)}

    rows = [
        row([("user", "hi 0")], [("assistant", "a")], [("assistant", "b")]),
        row([("system", "be brief"), ("user", "hi 1")], [("assistant", "a")], [("assistant", "b")]),
        row([("user", "hi 2")], [("robot", "a")], [("assistant", "b")]),  # unknown role
        row([("user", "hi 3")], [("assistant", "a")], [("assistant", "b"), ("user", "ok?")]),  # ends with user
        row([("user", "")], [("assistant", "a")], [("assistant", "b")]),  # empty content
        row([("user", "hi 5")], [("assistant", "a")], [("robot", "b")]),  # unknown role again
    ]
    report = check_data(Dataset.from_list(rows))
    errors = [f for f in report.findings if f.code == "format_error"]
    assert all(f.severity == "error" for f in errors) and not report.ok
    assert sorted((f.count, _rows(f), _excerpts(f)) for f in errors) == [
        (1, [3], ["rejected ends with a user message"]),
        (1, [4], ["prompt[0] (user) is empty"]),
        (2, [2, 5], ["chosen[0] has role 'robot'", "rejected[0] has role 'robot'"]),
    ]


def test_malformed_rows_in_a_list_of_dicts():
    good = {"prompt": _chat(("user", "q")), "chosen": _chat(("assistant", "y")), "rejected": _chat(("assistant", "n"))}
    rows = [
        good,
        {**good, "chosen": ["just text"]},
        {**good, "rejected": [{"role": "assistant"}]},
        {**good, "chosen": "plain text"},
        {**good, "rejected": []},
    ]
    pairs, problems = read_pairs(rows)
    assert [p.row for p in pairs] == [0]
    assert {row: (p.code, p.detail) for row, p in problems.items()} == {
        1: ("format_error", "chosen[0] is str"),
        2: ("format_error", "rejected[0] has keys ['role']"),
        3: ("format_error", "chosen is text but the data holds messages"),
        4: ("missing_field", "rejected is empty"),
    }


def test_implicit_prompt_is_extracted_as_trl_does():
    rows = [{"chosen": f"Q: what is {i}? A: yes", "rejected": f"Q: what is {i}? A: no"} for i in range(3)]
    rows.append({"chosen": "abc", "rejected": "xyz"})  # no shared beginning: no prompt
    pairs, problems = read_pairs(Dataset.from_list(rows))
    # TRL's extract_prompt: the shared prefix, less a trailing space that moves into the completions
    assert [(p.prompt, p.chosen, p.rejected) for p in pairs] == [
        (f"Q: what is {i}? A:", " yes", " no") for i in range(3)
    ]
    assert problems[3].code == "missing_field" and problems[3].detail.startswith(
        "prompt is empty: chosen and rejected share no beginning"
    )


def test_implicit_prompt_conversational():
    row = {"chosen": _chat(("user", "q"), ("assistant", "yes")), "rejected": _chat(("user", "q"), ("assistant", "no"))}
    pairs, _ = read_pairs(Dataset.from_list([row]))
    assert (pairs[0].prompt, pairs[0].chosen, pairs[0].rejected) == (
        _chat(("user", "q")),
        _chat(("assistant", "yes")),
        _chat(("assistant", "no")),
    )
    report = check_data(Dataset.from_list([row] * 3))
    assert report.ok and _rows(_by_code(report)["duplicate_pair"]) == [1, 2]


def test_too_few_pairs():
    empty = check_data(Dataset.from_dict({"prompt": [], "chosen": [], "rejected": []}, features=TEXT_FEATURES))
    assert [(f.code, f.severity, f.count) for f in empty.findings] == [("too_few_pairs", "error", 0)]
    unusable = _by_code(
        check_data(Dataset.from_list([{"prompt": f"p{i}", "chosen": "", "rejected": "r"} for i in range(3)]))
    )
    assert (unusable["too_few_pairs"].severity, unusable["missing_field"].count) == ("error", 3)
    thirty = Dataset.from_list(_balanced(30))
    few = _by_code(check_data(thirty))["too_few_pairs"]
    assert (few.severity, few.count) == ("warning", 30) and "Only 30 usable pairs (fewer than 100)" in few.message
    assert check_data(thirty, min_pairs=30).findings == []


def test_low_prompt_diversity():
    found = _by_code(check_data(Dataset.from_list(_balanced(30, prompt=lambda i: f"Prompt {i % 3}?")), min_pairs=1))
    assert set(found) == {"low_prompt_diversity"}
    diversity = found["low_prompt_diversity"]
    assert (diversity.severity, diversity.count) == (
        "warning",
        3,
    ) and "3 distinct prompts for 30 pairs (10%" in diversity.message
    assert diversity.examples == [{"row": i, "excerpt": f"10 pairs: Prompt {i}?"} for i in range(3)]
    six = check_data(Dataset.from_list(_balanced(30, prompt=lambda i: f"Prompt {i % 6}?")), min_pairs=1)
    assert six.findings == []  # 6 / 30 = 20%: not below the threshold


def _lengths_rows(longer: int, shorter: int, ties: int = 0) -> list[dict[str, str]]:
    """Pairs with chosen longer in `longer`, shorter in `shorter` and as long in `ties` of them."""
    rows = [
        {"prompt": f"P{i}", "chosen": f"{i:03d} a long answer", "rejected": f"{i:03d} short"} for i in range(longer)
    ]
    rows += [
        {"prompt": f"S{i}", "chosen": f"{i:03d} short", "rejected": f"{i:03d} a long answer"} for i in range(shorter)
    ]
    rows += [{"prompt": f"T{i}", "chosen": f"{i:03d} aaaaa", "rejected": f"{i:03d} bbbbb"} for i in range(ties)]
    return rows


def test_length_bias_with_a_binomial_test():
    report = check_data(Dataset.from_list(_lengths_rows(27, 3, ties=4)), min_pairs=1)
    bias = _by_code(report)["length_bias"]
    p_value = _two_sided_binomial_p(27, 30)
    assert (bias.severity, bias.count, _rows(bias)) == ("warning", 27, [0, 1, 2])
    assert f"in 27 of 30 pairs of different length (90%, in characters; binomial test p={p_value:.2g})" in bias.message
    assert bias.message.startswith("Chosen is longer than rejected") and "learn that longer is better" in bias.message
    assert _excerpts(bias)[0] == "chosen 17 vs rejected 9 characters"
    shorter = _by_code(check_data(Dataset.from_list(_lengths_rows(2, 28)), min_pairs=1))["length_bias"]
    assert (
        shorter.count == 28 and _rows(shorter) == [2, 3, 4] and "shorter than rejected in 28 of 30" in shorter.message
    )
    assert "length_bias" not in _by_code(
        check_data(Dataset.from_list(_lengths_rows(24, 6)), min_pairs=1)
    )  # 80%: not above
    assert _two_sided_binomial_p(5, 5) > 0.05
    assert "length_bias" not in _by_code(
        check_data(Dataset.from_list(_lengths_rows(5, 0)), min_pairs=1)
    )  # too few to tell


def test_length_bias_counts_tokens_with_a_tokenizer(tokenizer):
    # "éééé" is 4 characters but 8 bytes (8 tokens): chosen is shorter in characters, longer in tokens
    rows = [{"prompt": f"Prompt {i}", "chosen": f"{i:02d}éééé", "rejected": f"{i:02d}abcdefg"} for i in range(30)]
    in_characters = _by_code(check_data(Dataset.from_list(rows), min_pairs=1))["length_bias"]
    assert "shorter than rejected in 30 of 30" in in_characters.message
    assert _excerpts(in_characters)[0] == "chosen 6 vs rejected 9 characters"
    in_tokens = _by_code(check_data(Dataset.from_list(rows), tokenizer=tokenizer, min_pairs=1))["length_bias"]
    assert "longer than rejected in 30 of 30" in in_tokens.message and "in tokens" in in_tokens.message
    assert _excerpts(in_tokens)[0] == "chosen 11 vs rejected 10 tokens"  # 10 bytes + EOS vs 9 bytes + EOS


def test_token_lengths_by_hand(tokenizer):
    text = [
        Pair(0, "x" * 10, "y" * 5, "zé"),  # 10 | 5 + EOS | 1 + 2 bytes + EOS
        Pair(1, "p", "abc" + EOS, "d"),  # an EOS already there is not added again
    ]
    assert token_lengths(text, tokenizer) == ([10, 1], [6, 4], [4, 2])
    chat = [Pair(2, _chat(("user", "hi")), _chat(("assistant", "abc")), _chat(("assistant", "é")))]
    # conversational: <|user|> h i <|end|> <|assistant|> = 5 prompt tokens; a b c <|end|> = 4; é (2 bytes) <|end|> = 3
    assert token_lengths(chat, tokenizer) == ([5], [4], [3])


def _trl_prepared(dataset, tokenizer, max_length=None):
    """TRL 1.16's own DPOTrainer._prepare_dataset (extract prompt, add EOS, tokenise, drop) without a model."""
    from trl import DPOTrainer

    args = SimpleNamespace(dataset_num_proc=None, max_length=max_length, truncation_mode="keep_start")
    return DPOTrainer._prepare_dataset(SimpleNamespace(_tokenizer=tokenizer), dataset, tokenizer, args, "check")


@pytest.mark.parametrize(
    "rows",
    [
        [
            {"prompt": "Say hi", "chosen": " hi", "rejected": " hello there" + EOS},
            {"prompt": "Héllo", "chosen": "!", "rejected": "?!"},
        ],
        [{"chosen": "Q: 2+2? A: 4", "rejected": "Q: 2+2? A: five"}, {"chosen": "Say: ja", "rejected": "Say: nein"}],
        [
            {
                "prompt": _chat(("system", "be brief"), ("user", "hi")),
                "chosen": _chat(("assistant", "yo")),
                "rejected": _chat(("assistant", "hello")),
            },
            {
                "prompt": _chat(("user", "é?")),
                "chosen": _chat(("assistant", "oui")),
                "rejected": _chat(("assistant", "non")),
            },
        ],
        [
            {
                "chosen": _chat(("user", "a"), ("assistant", "b"), ("user", "c"), ("assistant", "good")),
                "rejected": _chat(("user", "a"), ("assistant", "b"), ("user", "c"), ("assistant", "bad")),
            }
        ],
    ],
    ids=["text", "text-implicit", "chat", "chat-implicit-multi-turn"],
)
def test_token_lengths_match_trls_tokenisation(tokenizer, rows):
    dataset = Dataset.from_list(rows)
    prepared = _trl_prepared(dataset, tokenizer)
    expected = tuple([len(ids) for ids in prepared[column]] for column in ("prompt_ids", "chosen_ids", "rejected_ids"))
    pairs, problems = read_pairs(dataset)
    assert not problems and token_lengths(pairs, tokenizer) == expected


def test_pairs_dropped_or_truncated_at_max_length(tokenizer):
    rows = [
        {"prompt": "x" * 10, "chosen": "y" * 5, "rejected": "z" * 3},  # 10 + 6: fits in 20
        {"prompt": "x" * 20, "chosen": "y", "rejected": "z"},  # prompt fills max_length: dropped
        {"prompt": "x" * 15, "chosen": "y" * 9, "rejected": "z"},  # 15 + 10 = 25 > 20: completion truncated
        {"prompt": "x" * 19, "chosen": "y", "rejected": "zz"},  # 19 + 3 = 22 > 20: truncated
        {"prompt": "x" * 25, "chosen": "y", "rejected": "z"},  # dropped
    ]
    dataset = Dataset.from_list(rows)
    found = _by_code(check_data(dataset, tokenizer=tokenizer, max_length=20, min_pairs=1))
    assert set(found) == {"prompt_too_long", "truncated_completion"}
    dropped, truncated = found["prompt_too_long"], found["truncated_completion"]
    assert (dropped.severity, dropped.count, _rows(dropped)) == (
        "warning",
        2,
        [1, 4],
    ) and "2 of 5 pairs" in dropped.message
    assert _excerpts(dropped) == [
        "prompt 20 + chosen 2 / rejected 2 tokens",
        "prompt 25 + chosen 2 / rejected 2 tokens",
    ]
    assert len(_trl_prepared(dataset, tokenizer, max_length=20)) == 5 - 2  # TRL drops the same two
    assert (truncated.severity, truncated.count, _rows(truncated)) == ("warning", 2, [2, 3])
    assert _excerpts(truncated)[0] == "prompt 15 + chosen 10 / rejected 2 tokens"
    keep_end = _by_code(
        check_data(dataset, tokenizer=tokenizer, max_length=20, truncation_mode="keep_end", min_pairs=1)
    )
    assert set(keep_end) == {"truncated_prompt"} and _rows(keep_end["truncated_prompt"]) == [1, 2, 3]
    assert keep_end["truncated_prompt"].count == 4
    everything = check_data(dataset, tokenizer=tokenizer, max_length=10, min_pairs=1)
    all_dropped = _by_code(everything)["prompt_too_long"]
    assert (all_dropped.severity, all_dropped.count) == (
        "error",
        5,
    ) and "leaving nothing to train on" in all_dropped.message
    assert not everything.ok
    assert token_findings([5], [5], [5], max_length=20) == []
    assert _rows(token_findings([30, 1], [1, 1], [1, 1], max_length=20, rows=[7, 8])[0]) == [7]


def test_bad_arguments():
    dataset = Dataset.from_list(_balanced(3))
    with pytest.raises(ConfigError, match="max_length needs a tokenizer"):
        check_data(dataset, max_length=10)
    with pytest.raises(ConfigError, match="truncation_mode must be one of keep_start, keep_end, got 'keep_middle'"):
        check_data(dataset, truncation_mode="keep_middle")
    with pytest.raises(ConfigError, match="missing: \\['rejected'\\]"):
        check_data(Dataset.from_list([{"prompt": "p", "chosen": "c"}]))


def test_report_table_json_and_ensure_clean(caplog):
    rows = _balanced()
    rows[0]["chosen"] = rows[0]["rejected"]
    for i in (3, 4, 5, 6):
        rows[i]["chosen"] = ""
    report = check_data(Dataset.from_list(rows))
    assert [(f.code, f.count) for f in report.errors] == [
        ("missing_field", 4),
        ("identical_pair", 1),
    ] and not report.warnings
    with pytest.raises(ConfigError) as info:
        ensure_clean(report)
    message = str(info.value)
    assert "[missing_field, 4 row(s)]" in message and "Rows 3, 4, 5, …." in message
    assert "[identical_pair, 1 row(s)]" in message and "Rows 0." in message and "allow_data_errors: true" in message
    with caplog.at_level(logging.WARNING, logger="dpo_plugin.data_quality"):
        ensure_clean(report, allow_errors=True)
    assert "allow_data_errors: true" in caplog.text and "missing_field" in caplog.text
    ensure_clean(check_data(Dataset.from_list(_balanced())))  # clean: no error

    table = report.format_table().splitlines()
    assert table[0] == "120 pairs: 2 error(s), 0 warning(s)"
    assert table[1].split() == ["severity", "code", "count", "message", "examples"]
    assert table[3].split()[:3] == ["error", "missing_field", "4"] and table[3].endswith("row 3: chosen is empty")
    assert any(line.endswith("row 0: Reply 0..") for line in table)
    as_json = json.loads(json.dumps(report.to_dict()))
    assert (as_json["ok"], as_json["errors"], as_json["warnings"], as_json["rows"]) == (False, 2, 0, 120)
    assert as_json["findings"][1] == {
        "code": "identical_pair",
        "severity": "error",
        "message": report.errors[1].message,
        "count": 1,
        "examples": [{"row": 0, "excerpt": "Reply 0.."}],
    }


def test_warnings_are_logged(caplog):
    rows = _balanced()
    rows[1] = dict(rows[0])
    with caplog.at_level(logging.WARNING, logger="dpo_plugin.data_quality"):
        report = check_data(Dataset.from_list(rows))
    assert report.ok and [f.code for f in report.warnings] == ["duplicate_pair"]
    records = [r for r in caplog.records if r.name == "dpo_plugin.data_quality"]
    assert [r.levelname for r in records] == ["WARNING"] and "duplicate_pair (1)" in records[0].getMessage()


TOOL_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% if m.get('tool_calls') %}"
    "{{ m['tool_calls'] | tojson }}{% endif %}<|end|>{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def _tool_call_pair(city: str, arguments) -> dict:
    call = {"type": "function", "function": {"name": "weather", "arguments": arguments}}
    return {
        "prompt": _chat(("user", f"Weather in {city}?")),
        "chosen": [
            {"role": "assistant", "content": "", "tool_calls": [call]},
            {"role": "tool", "name": "weather", "content": "sunny"},
            {"role": "assistant", "content": f"Sunny in {city}."},
        ],
        "rejected": _chat(("assistant", "No idea.")),
    }


def test_tool_call_data_typed_as_json_is_read_and_counted_as_trl_does(tmp_path):
    """datasets 5 types tool-call messages (keys differ by message, arguments a mapping or a JSON string) as
    ``List(Json)``; TRL trains on them, and the columns, the data checks and the token counts accept them too."""
    from datasets import Json, List

    from dpo_plugin.preference_data import validate_preference_columns
    from dpo_plugin.testing.tiny import tiny_tokenizer

    path = tmp_path / "tools.jsonl"
    rows = [_tool_call_pair("Oslo", {"city": "Oslo"}), _tool_call_pair("Rome", '{"city": "Rome"}')]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    dataset = load_preference_data(str(path), split="train")
    assert dataset.features["chosen"] == List(Json()) and dataset.to_list() == rows
    assert validate_preference_columns(dataset) == "messages"

    tool_tokenizer = tiny_tokenizer()
    tool_tokenizer.chat_template = TOOL_TEMPLATE
    prepared = _trl_prepared(dataset, tool_tokenizer)
    expected = tuple([len(ids) for ids in prepared[column]] for column in ("prompt_ids", "chosen_ids", "rejected_ids"))
    pairs, problems = read_pairs(dataset)
    assert not problems and token_lengths(pairs, tool_tokenizer) == expected
    # by hand: prompt <|user|> + "Weather in Oslo?" (16 bytes) + <|end|> + <|assistant|>; rejected "No idea." + <|end|>
    assert expected[0] == [19, 19] and expected[2] == [9, 9]
    report = check_data(dataset, tokenizer=tool_tokenizer, max_length=512, min_pairs=1)
    assert report.findings == []


def test_tool_call_messages_without_a_content_key_are_accepted_as_trl_accepts_them(tmp_path):
    """What datasets 5 stores for TRL's own tool-call data: an assistant message with tool_calls and no content."""
    from dpo_plugin.testing.tiny import tiny_tokenizer

    rows = [_tool_call_pair("Oslo", {"city": "Oslo"}), _tool_call_pair("Rome", {"city": "Rome"})]
    for row in rows:
        del row["chosen"][0]["content"]
    path = tmp_path / "tools.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    dataset = load_preference_data(str(path), split="train")
    tool_tokenizer = tiny_tokenizer()
    tool_tokenizer.chat_template = TOOL_TEMPLATE
    prepared = _trl_prepared(dataset, tool_tokenizer)  # TRL tokenises them
    pairs, problems = read_pairs(dataset)
    assert not problems and len(pairs) == 2
    expected = tuple([len(ids) for ids in prepared[column]] for column in ("prompt_ids", "chosen_ids", "rejected_ids"))
    assert token_lengths(pairs, tool_tokenizer) == expected
    assert check_data(dataset, tokenizer=tool_tokenizer, max_length=512, min_pairs=1).findings == []
    del rows[0]["chosen"][0]["tool_calls"]  # neither content nor tool calls: still malformed
    _, problems = read_pairs(rows)
    assert problems[0].detail == "chosen[0] has keys ['role']"


def test_pairs_identical_after_truncation_are_counted_like_identical_pairs(tokenizer):
    """The byte tokenizer: one token per character, plain completions end with EOS. A 20-token prompt leaves room
    for 4 tokens at max_length 24: "ab…" and "ab…" are cut to the same "abcd"; "abXY…" still differs at its third."""
    rows = [
        {"prompt": "x" * 20, "chosen": "abcd right", "rejected": "abcd wrong"},
        {"prompt": "y" * 20, "chosen": "abcd yes", "rejected": "abcd no"},
        {"prompt": "z" * 20, "chosen": "abXY one", "rejected": "abcd two"},
    ]
    found = _by_code(check_data(Dataset.from_list(rows), tokenizer=tokenizer, max_length=24, min_pairs=1))
    same = found["identical_after_truncation"]
    assert (same.severity, same.count, _rows(same)) == ("error", 2, [0, 1])  # 2 of 3: most pairs
    assert same.message.startswith("2 of 3 pairs have chosen and rejected identical after truncation to max_length=24")
    found = _by_code(check_data(Dataset.from_list(rows[1:]), tokenizer=tokenizer, max_length=24, min_pairs=1))
    assert found["identical_after_truncation"].severity == "warning"  # 1 of 2: not most
    assert "identical_after_truncation" not in _by_code(
        check_data(Dataset.from_list(rows), tokenizer=tokenizer, max_length=40, min_pairs=1)
    )
