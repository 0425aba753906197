"""``dpo-plugin evaluate`` through the command's entry point: both checks, judge and check options, exit codes;
adapter folders (on their base, or ``--base``) and merged folders of a LoRA run trained with the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_checks_robustness import constant_output_model

from dpo_plugin.cli import main
from dpo_plugin.evaluation.metric_help import METRIC_HELP

REPO = Path(__file__).resolve().parent.parent
TINY = str(REPO / "dpo_plugin" / "testing" / "tiny-model")
DATA = str(REPO / "dpo_plugin" / "demo" / "data")  # its test split: 40 pairs, 40 distinct prompts


def first_is_better(prompt, a, b):
    """Pure position bias: every prompt is a tie (the two orders disagree)."""
    return 0


def prefer_all_a(prompt, a, b):
    def good(text):
        return bool(text) and set(text) == {"A"}

    return 0.5 if good(a) == good(b) else (0 if good(a) else 1)


def _evaluate(tmp_path, model, reference, checks, judge_function, check_params, *extra):
    argv = [
        "evaluate",
        "--model",
        model,
        "--reference",
        reference,
        "--data",
        DATA,
        "--checks",
        *checks,
        "--judge",
        "function",
        "--judge_params",
        json.dumps({"function": f"test_evaluate_cli:{judge_function}"}),
        "--check_params",
        json.dumps(check_params),
        "--output_dir",
        str(tmp_path),
        "--max_length",
        "128",
        *extra,
    ]
    code = main(argv)
    report_file = tmp_path / "eval" / "report.json"
    return code, json.loads(report_file.read_text()) if report_file.exists() else None


def test_evaluate_runs_both_checks_with_the_given_settings_and_strict_exit_codes(tmp_path, capsys):
    params = {"win_rate": {"max_new_tokens": 2, "max_prompts": 5, "batch_size": 5}, "reward_margin": {"threshold": 0.6}}
    args = (TINY, TINY, ["reward_margin", "win_rate"], "first_is_better", params)
    code, report = _evaluate(tmp_path / "lenient", *args)
    assert code == 0  # failed checks, but not --strict
    assert "Overall: NOT PASSED" in capsys.readouterr().out
    assert report["checks"].keys() == {"reward_margin", "win_rate"} and report["passed"] is False
    margin, win = report["checks"]["reward_margin"], report["checks"]["win_rate"]
    # the model is its own reference: every margin is 0, so no pair counts as a win
    assert margin["metrics"]["n"] == 40 and margin["metrics"]["accuracy"] == 0.0 and margin["threshold"] == 0.6
    assert win["details"]["generation"]["max_new_tokens"] == 2 and win["details"]["generation"]["batch_size"] == 5
    assert (win["metrics"]["n"], win["metrics"]["disagreements"]) == (5, 5) and len(win["details"]["samples"]) == 5
    for name, check in report["checks"].items():  # every metric has its one-line meaning (report.md, docs)
        assert set(check["metrics"]) <= set(METRIC_HELP[name]), name
    code, report = _evaluate(tmp_path / "strict", *args, "--strict")
    assert code == 1 and report["passed"] is False


@pytest.fixture(scope="module")
def letter_folders(tmp_path_factory, tokenizer):
    """Saved models that always answer "A" (policy) and "B" (reference), with the tiny tokenizer."""
    folders = []
    for letter in "AB":
        model = constant_output_model(len(tokenizer), tokenizer.convert_tokens_to_ids(letter))
        for config in (model.config, model.generation_config):
            config.pad_token_id, config.eos_token_id = tokenizer.pad_token_id, tokenizer.eos_token_id
        folder = tmp_path_factory.mktemp(f"always-{letter}")
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        folders.append(str(folder))
    return folders


def test_evaluate_strict_exits_zero_when_every_check_passes(tmp_path, letter_folders, capsys):
    policy, reference = letter_folders
    # 6 prompts: the fewest that all-won can pass on (5 of 5 is not significant: one-sided p = 1/32 > 0.025)
    params = {"win_rate": {"max_new_tokens": 3, "max_prompts": 6, "batch_size": 6}}
    code, report = _evaluate(tmp_path, policy, reference, ["win_rate"], "prefer_all_a", params, "--strict")
    assert code == 0 and report["passed"] is True and "Overall: PASSED" in capsys.readouterr().out
    win = report["checks"]["win_rate"]
    assert win["metrics"]["wins"] == 6 and win["details"]["samples"][0]["policy"] == "AAA"
    assert win["metrics"]["conservative_p_value"] == pytest.approx(2.0**-6)
    assert win["interval"][1] == 1.0 and 0.5 < win["interval"][0] < 6 / (6 + 1.959963984540054**2)  # below Wilson's


def test_evaluate_rejects_an_unknown_check_option(tmp_path, capsys):
    code, report = _evaluate(tmp_path, TINY, TINY, ["win_rate"], "first_is_better", {"win_rate": {"temprature": 0.7}})
    assert code == 2 and report is None
    assert "does not take ['temprature']" in capsys.readouterr().err


def test_a_full_model_without_a_reference_is_never_compared_with_itself(tmp_path):
    """Without --reference a full model has no reference: the checks that need one are skipped, saying why."""
    from dpo_plugin.evaluation.saved_model import evaluate_saved_model
    from dpo_plugin.testing.tiny import save_tiny

    folder = save_tiny(tmp_path / "model")
    report = evaluate_saved_model(
        str(folder), "dpo_plugin/demo/data", checks=["reward_margin"], output_dir=str(tmp_path / "e"), max_length=128
    )
    check = report["checks"]["reward_margin"]
    assert check["passed"] is False and "no reference model" in check["skipped"]


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """A tiny LoRA run trained with the CLI (testing/tiny.yaml, 8 steps), with its merged model in merged/."""
    folder = tmp_path_factory.mktemp("lora-run") / "run"
    argv = [
        "train",
        "--config",
        str(REPO / "dpo_plugin" / "testing" / "tiny.yaml"),
        "--output_dir",
        str(folder),
        "--adapter",
        "lora",
        "--adapter_params",
        '{"r": 4}',
        "--merge_adapter",
        "true",
        "--max_steps",
        "8",
    ]
    assert main(argv) == 0
    assert (folder / "adapter_config.json").is_file() and (folder / "merged" / "config.json").is_file()
    return folder


def _margin_report(tmp_path, *flags):
    argv = [
        "evaluate",
        *flags,
        "--data",
        DATA,
        "--checks",
        "reward_margin",
        "--max_length",
        "128",
        "--output_dir",
        str(tmp_path),
    ]
    assert main(argv) == 0
    return json.loads((tmp_path / "eval" / "report.json").read_text())


def test_evaluate_an_adapter_folder_and_its_merged_model(lora_run, tmp_path):
    adapter = _margin_report(tmp_path / "adapter", "--model", str(lora_run))
    evaluated = adapter["evaluated"]
    assert (evaluated["model"], evaluated["base"], evaluated["reference"]) == (
        str(lora_run),
        TINY,
        TINY,
    )  # the adapter's base
    assert (evaluated["split"], evaluated["beta"], evaluated["max_length"]) == ("test", 0.1, 128)
    assert adapter["reference"] == "adapter (the policy with its PEFT adapters disabled)"
    margin = adapter["checks"]["reward_margin"]["metrics"]
    assert margin["n"] == 40 and margin["nonfinite"] == 0  # every held-out pair of the test split
    assert margin["margin_mean"] > 0 and margin["accuracy"] > 0.5  # trained: the chosen answers gained on the base
    explicit = _margin_report(tmp_path / "base", "--model", str(lora_run), "--base", TINY)
    assert explicit["checks"]["reward_margin"]["metrics"] == margin
    merged = _margin_report(tmp_path / "merged", "--model", str(lora_run / "merged"), "--reference", TINY)
    assert (merged["evaluated"]["base"], merged["evaluated"]["reference"]) == (None, TINY)
    assert merged["reference"] == f"path ({TINY})"
    merged_margin = merged["checks"]["reward_margin"]["metrics"]
    assert merged["checks"]["reward_margin"]["passed"] == adapter["checks"]["reward_margin"]["passed"]  # same verdict
    assert merged_margin["n"] == 40 and merged_margin["accuracy"] == margin["accuracy"]  # the same policy, merged
    for key in ("margin_mean", "chosen_reward_mean", "rejected_reward_mean"):
        assert merged_margin[key] == pytest.approx(margin[key], rel=1e-4, abs=1e-6), key


def test_base_applies_to_adapter_folders_only(lora_run, tmp_path, capsys):
    argv = [
        "evaluate",
        "--model",
        str(lora_run / "merged"),
        "--base",
        TINY,
        "--data",
        DATA,
        "--checks",
        "reward_margin",
        "--output_dir",
        str(tmp_path),
    ]
    assert main(argv) == 2
    assert "--base applies to a PEFT adapter folder" in capsys.readouterr().err


def _margin_only(folder: Path, **options) -> dict:
    from dpo_plugin.evaluation.saved_model import evaluate_saved_model

    return evaluate_saved_model(
        TINY, DATA, reference=TINY, checks=["reward_margin"], output_dir=str(folder), max_length=128, **options
    )


def test_evaluate_never_overwrites_a_report_it_did_not_write(tmp_path):
    from dpo_plugin.errors import ConfigError

    mine = tmp_path / "eval" / "report.md"
    mine.parent.mkdir()
    mine.write_text("my own notes")
    for reuse in (False, True):
        with pytest.raises(ConfigError, match="holds eval, which dpo-plugin did not write and the report would"):
            _margin_only(tmp_path, reuse_output_dir=reuse)
    assert mine.read_text() == "my own notes" and sorted(p.name for p in tmp_path.iterdir()) == ["eval"]


def test_evaluate_writes_by_trains_rules(tmp_path):
    """Not into a folder of other files unless told; not over its own earlier report unless told; listed in the
    folder's manifest."""
    from dpo_plugin.errors import ConfigError
    from dpo_plugin.output_folder import MANIFEST

    (tmp_path / "notes.txt").write_text("keep")
    with pytest.raises(ConfigError, match=r"is not empty \(notes.txt\) and is not a run of dpo-plugin"):
        _margin_only(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    _margin_only(tmp_path, reuse_output_dir=True)
    assert json.loads((tmp_path / MANIFEST).read_text())["written"] == ["eval"]
    first = (tmp_path / "eval" / "report.json").read_text()
    with pytest.raises(ConfigError, match=r"already holds a report \(eval/\), which this evaluation would replace"):
        _margin_only(tmp_path)
    assert (tmp_path / "eval" / "report.json").read_text() == first
    _margin_only(tmp_path, reuse_output_dir=True)  # its own report, replaced on request
    assert (tmp_path / "notes.txt").read_text() == "keep"
