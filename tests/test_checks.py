"""The post-training checks end to end on the tiny model: report, reference handling, judges, strict exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from trainer_fixtures import config_kwargs

import dpo_plugin
from dpo_plugin.errors import DpoPluginError
from dpo_plugin.preference_data import load_preference_data
from dpo_plugin.trl import DPOConfig, DPOTrainer

REPO = Path(__file__).resolve().parent.parent
TINY = str(REPO / "dpo_plugin" / "testing" / "tiny-model")
DEMO = load_preference_data(str(REPO / "dpo_plugin" / "demo" / "data"))
EVAL = DEMO["test"].select(range(12))
FAST_WIN_RATE = {"max_new_tokens": 4, "batch_size": 6}


def first_is_better(prompt, a, b):
    """A judge with pure position bias."""
    return 0


def broken_judge(prompt, a, b):
    raise RuntimeError("the judge is down")


def _trainer(tmp_path, eval_dataset=EVAL, model=TINY, **overrides):
    settings = dict(
        checks=["reward_margin", "win_rate"],
        judge="function",
        judge_params={"function": "test_checks:first_is_better"},
        check_params={"win_rate": FAST_WIN_RATE},
        max_length=128,
    )
    settings.update(overrides)
    args = DPOConfig(**config_kwargs(output_dir=str(tmp_path), **settings))
    return DPOTrainer(model, args=args, train_dataset=DEMO["train"].select(range(16)), eval_dataset=eval_dataset)


def test_checks_at_step_zero_have_known_outcomes(tmp_path):
    """Before training the policy is the reference: every margin is 0 (no pair is a win)
    and a position-biased judge's two orders disagree."""
    report = _trainer(tmp_path).run_checks()
    margin = report["checks"]["reward_margin"]
    assert margin["metrics"]["n"] == 12 and margin["metrics"]["accuracy"] == 0.0
    assert margin["metrics"]["margin_mean"] == pytest.approx(0.0, abs=1e-6) and margin["passed"] is False
    win = report["checks"]["win_rate"]
    assert (win["metrics"]["disagreements"], win["metrics"]["wins"], win["metrics"]["n"]) == (12, 0, 12)
    assert win["metrics"]["win_rate"] == 0.5 and win["passed"] is False and len(win["details"]["samples"]) == 10
    assert win["details"]["samples"][0]["reference"] == win["details"]["samples"][0]["policy"]  # same model, greedy
    assert report["passed"] is False
    files = {p.name for p in (tmp_path / "eval").iterdir()}
    assert {"report.json", "report.md", "win_rate.png", "margin_histogram.png"} <= files
    assert json.loads((tmp_path / "eval" / "report.json").read_text())["checks"].keys() == {"reward_margin", "win_rate"}


def test_training_runs_the_checks_and_logs_their_metrics(tmp_path, register_plugin):
    received = []

    class Forward:
        @staticmethod
        @dpo_plugin.hookimpl
        def post_train(report):
            received.append(report)

    register_plugin(Forward, "forward")
    trainer = _trainer(
        tmp_path,
        max_steps=6,
        learning_rate=5e-3,
        per_device_train_batch_size=8,
        judge_params={"function": "dpo_plugin.demo.arithmetic:judge_correct"},
    )
    trainer.train()
    assert received == [trainer.check_report]
    logged = {k: v for entry in trainer.state.log_history for k, v in entry.items()}
    assert logged["checks/reward_margin/n"] == 12 and "checks/win_rate/win_rate" in logged
    # training on chosen answers raises their implicit rewards above the rejected ones
    assert trainer.check_report["checks"]["reward_margin"]["metrics"]["margin_mean"] > 0


def test_judge_failures_are_reported_and_fail_the_check(tmp_path):
    report = _trainer(tmp_path, checks=["win_rate"], judge_params={"function": "test_checks:broken_judge"}).run_checks()
    win = report["checks"]["win_rate"]
    assert win["metrics"]["failures"] == 12 and win["metrics"]["n"] == 0 and win["passed"] is False
    assert "the judge is down" in win["details"]["judge_errors"][0]
    assert any("no usable prompts" in r for r in win["details"]["reasons"])


def test_no_eval_split_skips_with_a_reason(tmp_path):
    report = _trainer(tmp_path, eval_dataset=None).run_checks()
    assert all("no eval split" in c["skipped"] for c in report["checks"].values()) and report["passed"] is False


def test_precomputed_reference_reloads_the_initial_model_for_the_checks(tmp_path):
    trainer = _trainer(tmp_path, reference="precomputed", reference_params={"cache_dir": str(tmp_path / "cache")})
    report = trainer.run_checks()
    assert report["checks"]["reward_margin"]["metrics"]["accuracy"] == 0.0  # cached reference == policy at step 0
    assert report["checks"]["win_rate"]["metrics"]["n"] == 12  # generated from the model reloaded from its folder


def test_without_any_reference_the_checks_skip(make_model, tokenizer, tmp_path):
    args = DPOConfig(**config_kwargs(output_dir=str(tmp_path), loss_type=["simpo"], checks=["reward_margin"]))
    trainer = DPOTrainer(
        make_model(),
        args=args,
        train_dataset=DEMO["train"].select(range(8)),
        eval_dataset=EVAL,
        processing_class=tokenizer,
    )
    report = trainer.run_checks()
    assert "no reference model" in report["checks"]["reward_margin"]["skipped"]


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"check_params": {"win_rate": {"max_new_tokens": 0}}}, "empty completions"),
        ({"check_params": {"win_rate": {"temprature": 0.7}}}, "does not take ['temprature']"),
        ({"judge": None, "judge_params": None}, "set judge"),
        ({"checks": ["win_rte"]}, "Did you mean 'win_rate'"),
        ({"judge": "functon"}, "Did you mean 'function'"),
        ({"judge_params": {"function": "nowhere:nothing"}}, "cannot be imported"),
    ],
)
def test_bad_check_settings_fail_before_training(tmp_path, overrides, message):
    with pytest.raises(DpoPluginError) as info:
        _trainer(tmp_path, **overrides)
    assert message in str(info.value)


def _evaluate(tmp_path, *extra):
    command = [
        str(Path(sys.executable).with_name("dpo-plugin")),
        "evaluate",
        "--model",
        TINY,
        "--reference",
        TINY,
        "--data",
        str(REPO / "dpo_plugin" / "demo" / "data"),
        "--checks",
        "reward_margin",
        "--output-dir",
        str(tmp_path),
        "--max-length",
        "128",
        *extra,
    ]
    return subprocess.run(command, capture_output=True, text=True)


def test_evaluate_command_and_strict_exit_codes(tmp_path):
    lenient = _evaluate(tmp_path)
    assert lenient.returncode == 0, lenient.stderr[-2000:]
    assert "reward_margin  FAILED" in lenient.stdout and "Overall: NOT PASSED" in lenient.stdout
    strict = _evaluate(tmp_path, "--strict")  # the first evaluation's report is there: refused, nothing replaced
    assert strict.returncode == 2 and "--reuse_output_dir" in strict.stderr
    strict = _evaluate(tmp_path, "--strict", "--reuse_output_dir")
    assert strict.returncode == 1, strict.stderr[-2000:]
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["checks"]["reward_margin"]["metrics"]["n"] == 40
