"""The win_rate check on an EvalContext built by hand: values that are not verdicts and a position-biased judge.

The policy always says "A", the reference "B" (``constant_output_model``), so the texts the judge sees
are known; the judges are plain callables, as a third-party judge may be.
"""

from __future__ import annotations

import contextlib

import pytest
from test_checks_robustness import constant_output_model

from dpo_plugin.evaluation.checks.win_rate import win_rate
from dpo_plugin.evaluation.context import EvalContext
from dpo_plugin.evaluation.report import write_report

PROMPTS = [f"Question {i}?" for i in range(30)]


@pytest.fixture
def context(tokenizer, tmp_path):
    a_id, b_id = tokenizer.convert_tokens_to_ids(["A", "B"])
    policy, reference = constant_output_model(len(tokenizer), a_id), constant_output_model(len(tokenizer), b_id)

    def make(judge):
        return EvalContext(
            policy=policy,
            tokenizer=tokenizer,
            prompts=PROMPTS,
            score_pairs=lambda which: None,
            reference_model=lambda: contextlib.nullcontext(reference),
            reference_note="a model saying B",
            beta=0.1,
            output_dir=tmp_path,
            judge=judge,
        )

    return make


def says_yes(prompts, first, second):
    """A batched judge answering booleans: True where the second answer is the policy's ("A…")."""
    return [b.startswith("A") for b in second]


def prefers_first(prompts, first, second):
    """Picks the answer shown first for all but every fifth prompt, where it picks the policy's."""
    return [(0.0 if a.startswith("A") else 1.0) if i % 5 == 0 else 0.0 for i, a in enumerate(first)]


def test_booleans_are_failures_reported_with_the_judge_name(context):
    result = win_rate(context(says_yes), max_new_tokens=3, batch_size=10)
    m = result.metrics
    # a float column would have read True/False as 1/0: 30 wins. They are not verdicts.
    assert (m["wins"], m["failures"], m["invalid_verdicts"], m["n"]) == (0, 30, 60, 0) and result.passed is False
    assert result.details["warnings"][0].startswith("judge says_yes returned 60 values that are not verdicts")
    assert "prompt 0, policy first: False (bool)" in result.details["judge_errors"]


def test_a_position_biased_judge_is_flagged_in_the_report(context, tmp_path):
    result = win_rate(context(prefers_first), max_new_tokens=3, batch_size=10)
    m = result.metrics
    # every fifth prompt: (0, 1), a win; the others (0, 0), a disagreement. 54 of 60 picks are the first shown.
    assert (m["wins"], m["disagreements"], m["ties"], m["losses"]) == (6, 24, 0, 0)
    assert m["position_bias"] == pytest.approx(54 / 60) and m["position_bias_p_value"] == pytest.approx(2 / 2**24)
    assert m["win_rate"] == pytest.approx((6 + 12) / 30) and result.passed is False
    warning = result.details["warnings"][0]
    assert warning.startswith("judge prefers_first is position-biased: 90% of its picks are the answer shown first")
    write_report([result], tmp_path, [])
    assert f"warning: {warning}" in (tmp_path / "eval" / "report.md").read_text()
