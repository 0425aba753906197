"""The degeneration check: answers that never end and answers that repeat, policy against reference.

Measures on hand-made token ids with worked-out values; then the registered check on tiny models built to
never emit EOS (``suppress_tokens``) or to repeat one token (``constant_output_model``), so the outcome follows
from the construction.
"""

from __future__ import annotations

import contextlib
import copy

import numpy as np
import pytest
from test_checks_robustness import constant_output_model

import dpo_plugin
from dpo_plugin.evaluation import degeneration_verdict
from dpo_plugin.evaluation.checks.degeneration import degeneration
from dpo_plugin.evaluation.checks.win_rate import win_rate
from dpo_plugin.evaluation.context import EvalContext
from dpo_plugin.evaluation.degeneration import answer_measures, repetition_rate
from dpo_plugin.evaluation.generation import Generations
from dpo_plugin.evaluation.statistics import mean_interval

PROMPTS = [f"Question {i}?" for i in range(12)]


def test_repetition_rate_is_one_minus_distinct_over_total_ngrams():
    # 4-grams of 1 2 3 4 1 2 3 4: 1234 2341 3412 4123 1234 → 5, 4 distinct
    assert repetition_rate([1, 2, 3, 4, 1, 2, 3, 4]) == pytest.approx(1 - 4 / 5)
    assert repetition_rate([7] * 10) == pytest.approx(1 - 1 / 7)
    assert repetition_rate([1, 2, 3]) == 0.0 and repetition_rate(list(range(20))) == 0.0
    assert repetition_rate([5, 5, 5], n=1) == pytest.approx(1 - 1 / 3)


def test_answer_measures_read_eos_and_the_limit():
    generations = Generations(
        prompt_ids=[[1]] * 4,
        completion_ids=[[5, 6, 7, 8], [5, 6, 2], [5, 5, 5, 5], [5, 6]],
        texts=[""] * 4,
        finished=[False, True, False, False],
        lengths=[4, 2, 4, 2],
    )
    measures = answer_measures(generations, max_new_tokens=4, n=2)
    # the last answer stopped short of the limit without EOS (a pad-stripped end): not unfinished
    assert measures["unfinished"].tolist() == [1.0, 0.0, 1.0, 0.0]
    assert measures["repetition"].tolist() == pytest.approx([0.0, 0.0, 1 - 1 / 3, 0.0])


def test_a_policy_that_never_ends_fails_and_an_equal_one_passes():
    never = {"unfinished": [1.0] * 20, "repetition": [0.0] * 20}
    ends = {"unfinished": [0.0] * 20, "repetition": [0.0] * 20}
    v = degeneration_verdict(never, ends)
    assert v["passed"] is False and (v["unfinished_difference"], v["unfinished_low"], v["unfinished_high"]) == (1, 1, 1)
    assert v["reasons"] == [
        "the policy's share of answers that hit max_new_tokens without EOS exceeds the reference's by 1.000 "
        "[1.000, 1.000] (max 0.1)"
    ]
    same = degeneration_verdict(ends, ends)
    assert same["passed"] and same["unfinished_difference"] == 0 and same["n"] == 20


def test_a_small_or_uncertain_increase_passes_and_the_interval_is_the_paired_mean_intervals():
    rng = np.random.default_rng(0)
    policy = {"unfinished": (rng.random(40) < 0.3).astype(float), "repetition": rng.uniform(0, 0.2, 40)}
    reference = {"unfinished": (rng.random(40) < 0.1).astype(float), "repetition": rng.uniform(0, 0.2, 40)}
    v = degeneration_verdict(policy, reference, confidence=0.95, seed=3)
    low, high = mean_interval(policy["unfinished"] - reference["unfinished"], 0.95, seed=3)
    assert (v["unfinished_low"], v["unfinished_high"]) == pytest.approx((low, high))
    assert v["unfinished_difference"] == pytest.approx(np.mean(policy["unfinished"] - reference["unfinished"]))
    assert v["passed"] is (not (v["unfinished_difference"] > 0.1 and low > 0))
    lenient = degeneration_verdict(policy, reference, max_unfinished_increase=1.0)
    assert lenient["passed"] and "repetition_difference" in lenient
    with pytest.raises(ValueError, match="must lie in"):
        degeneration_verdict(policy, reference, max_repetition_increase=2)


@pytest.fixture
def context(tokenizer, tmp_path):
    def make(policy, reference, judge=None):
        return EvalContext(
            policy=policy,
            tokenizer=tokenizer,
            prompts=PROMPTS,
            score_pairs=lambda which: None,
            reference_model=lambda: contextlib.nullcontext(reference),
            reference_note="by hand",
            beta=0.1,
            output_dir=tmp_path,
            judge=judge,
        )

    return make


def ends_at_once(tokenizer):
    """A tiny Llama whose first token is always EOS: every answer ends, empty."""
    return constant_output_model(len(tokenizer), tokenizer.eos_token_id)


def never_ends(tokenizer):
    """A tiny Llama always saying "A", and never allowed EOS: every answer hits the limit, one 4-gram repeated."""
    model = constant_output_model(len(tokenizer), tokenizer.convert_tokens_to_ids("A"))
    model.generation_config.suppress_tokens = [tokenizer.eos_token_id]
    return model


def test_the_registered_check_fails_a_policy_that_never_emits_eos(context, tokenizer):
    result = degeneration(context(never_ends(tokenizer), ends_at_once(tokenizer)), max_new_tokens=8, batch_size=12)
    m = result.metrics
    assert (m["unfinished_policy"], m["unfinished_reference"], m["n"]) == (1.0, 0.0, 12)
    assert m["repetition_policy"] == pytest.approx(1 - 1 / 5) and m["repetition_reference"] == 0.0
    assert result.passed is False and len(result.details["reasons"]) == 2
    assert result.details["samples"][0]["policy"] == "A" * 8
    assert result.details["samples"][0]["verdict"] == "unfinished, repeats 80% of its 4-grams"


def test_the_registered_check_passes_an_equal_policy(context, tokenizer):
    model = never_ends(tokenizer)
    result = degeneration(context(model, copy.deepcopy(model)), max_new_tokens=8, batch_size=12)
    assert result.passed and result.metrics["unfinished_difference"] == 0 and result.metrics["unfinished_policy"] == 1.0


def test_it_is_registered_and_shares_win_rates_generations(context, tokenizer):
    spec = dpo_plugin.checks()["degeneration"]
    assert spec.obj is degeneration and not spec.needs_judge
    ctx = context(never_ends(tokenizer), ends_at_once(tokenizer), judge=lambda prompts, a, b: [0.5] * len(prompts))
    result = win_rate(ctx, max_new_tokens=8, batch_size=12)
    assert (result.metrics["unfinished_policy"], result.metrics["unfinished_reference"]) == (1.0, 0.0)
    assert (result.metrics["mean_length_policy"], result.metrics["mean_length_reference"]) == (8, 0)
    assert any("the degeneration check tests it" in w for w in result.details["warnings"])
    cached = dict(ctx.generations)
    assert len(cached) == 2
    again = degeneration(ctx, max_new_tokens=8, batch_size=12)
    assert ctx.generations == cached and again.metrics["unfinished_policy"] == 1.0  # nothing generated anew


def test_after_training_at_step_zero_the_policy_is_the_reference_and_passes(tmp_path):
    """Through the trainer: degeneration beside win_rate with the same generation settings (generated once);
    at step 0 the policy is the reference, so every difference is 0."""
    from pathlib import Path

    from trainer_fixtures import config_kwargs

    from dpo_plugin.preference_data import load_preference_data
    from dpo_plugin.trl import DPOConfig, DPOTrainer

    repo = Path(__file__).resolve().parent.parent
    demo = load_preference_data(str(repo / "dpo_plugin" / "demo" / "data"))
    generation = {"max_new_tokens": 6, "batch_size": 12}
    args = DPOConfig(
        **config_kwargs(
            output_dir=str(tmp_path),
            checks=["win_rate", "degeneration"],
            judge="function",
            judge_params={"function": "test_checks:first_is_better"},
            max_length=128,
            check_params={"win_rate": generation, "degeneration": generation},
        )
    )
    trainer = DPOTrainer(
        str(repo / "dpo_plugin" / "testing" / "tiny-model"),
        args=args,
        train_dataset=demo["train"].select(range(8)),
        eval_dataset=demo["test"].select(range(12)),
    )
    report = trainer.run_checks()
    check = report["checks"]["degeneration"]
    assert check["passed"] is True and check["metrics"]["n"] == 12
    assert check["metrics"]["unfinished_difference"] == 0 and check["metrics"]["repetition_difference"] == 0
    win = report["checks"]["win_rate"]["metrics"]
    assert (win["unfinished_policy"], win["repetition_policy"]) == (
        check["metrics"]["unfinished_policy"],
        check["metrics"]["repetition_policy"],
    )
    assert win["mean_length_policy"] == win["mean_length_reference"] and win["lc_win_rate"] is None  # 12 prompts < 30
    assert "| degeneration | passed | unfinished_difference = 0.000 |" in (tmp_path / "eval" / "report.md").read_text()
