"""`dpo-plugin check-data`: the table, --json, and the exit codes (0 clean or warnings only, 1 errors, 2 bad input)."""

from __future__ import annotations

import json
from pathlib import Path

from transformers import AutoTokenizer

from dpo_plugin.cli import main

REPO = Path(__file__).resolve().parent.parent
DEMO = str(REPO / "dpo_plugin" / "demo" / "data")
TINY = str(REPO / "dpo_plugin" / "testing" / "tiny-model")


def _check(capsys, *args):
    code = main(["check-data", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_clean_data_passes_and_says_what_needs_a_model(capsys):
    code, out, _ = _check(capsys, "--data", DEMO)
    assert code == 0
    assert out.splitlines() == [
        "320 pairs: no problems found.",
        "(Pass --model to count the pairs dropped or truncated at --max_length and to check the chat template.)",
    ]


def test_warnings_alone_do_not_fail(capsys):
    code, out, _ = _check(capsys, "--data", DEMO, "--split", "test")
    assert code == 0
    assert out.startswith("40 pairs: 0 error(s), 1 warning(s)") and "too_few_pairs" in out


def test_errors_fail_and_json_lists_each_finding(tmp_path, capsys):
    rows = [{"prompt": f"Q{i}?", "chosen": f"A{i}.", "rejected": f"not A{i}, no."} for i in range(120)]
    rows[3]["rejected"] = rows[3]["chosen"]
    rows[7]["prompt"] = ""
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    code, out, _ = _check(capsys, "--data", str(data), "--json")
    assert code == 1
    report = json.loads(out)
    assert report["rows"] == 120 and report["ok"] is False
    found = {f["code"]: (f["severity"], f["count"], [e["row"] for e in f["examples"]]) for f in report["findings"]}
    assert found["identical_pair"] == ("error", 1, [3])
    assert found["missing_field"] == ("error", 1, [7])
    code, out, _ = _check(capsys, "--data", str(data))
    assert code == 1 and "identical_pair" in out and "missing_field" in out


def test_with_a_model_prompts_that_fill_max_length_are_counted(capsys):
    tokenizer = AutoTokenizer.from_pretrained(TINY)
    prompts = [json.loads(line)["prompt"] for line in Path(DEMO, "test.jsonl").read_text().splitlines()]
    lengths = [
        len(tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"])
        for p in prompts
    ]
    assert min(lengths) > 10  # so at max_length 10 every one of the 40 pairs would be dropped
    code, out, _ = _check(capsys, "--data", DEMO, "--split", "test", "--model", TINY, "--max-length", "10", "--json")
    assert code == 1
    found = {f["code"]: f for f in json.loads(out)["findings"]}
    assert found["prompt_too_long"]["severity"] == "error" and found["prompt_too_long"]["count"] == 40


def test_reading_comparing_and_tokenising_show_progress(capsys):
    """A large dataset takes a while (200k rows: a minute with --model): each stage shows a progress bar."""
    code, _, err = _check(capsys, "--data", DEMO, "--split", "test", "--model", TINY, "--json")
    assert code == 0
    for stage in ("Reading pairs", "Comparing pairs", "Tokenizing check dataset"):
        assert f"{stage}: " in err, stage


def test_a_model_that_cannot_be_loaded_is_a_clear_error(tmp_path, capsys):
    code, out, err = _check(capsys, "--data", DEMO, "--model", str(tmp_path / "no-such-model"))
    assert code == 2 and out == ""
    assert err.startswith(f"error: Cannot load the tokenizer of --model '{tmp_path / 'no-such-model'}'")
