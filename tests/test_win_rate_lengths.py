"""The win_rate check with answer lengths: the length-controlled verdict beside the raw one, and its report.

The policy says "A" and the reference "B", each ending with EOS at a set rate per token (sampled, seeded), so the
answers' lengths vary and the policy's are longer (about 7 tokens against 2). The judge prefers the longer answer
and nothing else: the raw win rate passes, the length-controlled one must not.
"""

from __future__ import annotations

import contextlib
import json
import math

import pytest
import torch
from test_checks_robustness import constant_output_model

from dpo_plugin.evaluation import length_controlled_verdict
from dpo_plugin.evaluation.checks.win_rate import win_rate
from dpo_plugin.evaluation.context import EvalContext
from dpo_plugin.evaluation.report import write_report

PROMPTS = [f"Question {i}?" for i in range(40)]
SETTINGS = {"max_new_tokens": 12, "batch_size": 20, "do_sample": True, "seed": 5}


def says_until_eos(tokenizer, token: str, eos_probability: float):
    """A tiny Llama whose next token is ``token`` or EOS, EOS with ``eos_probability`` (see ``constant_output_model``:
    the hidden state is h ≈ 1, so a lm_head row α·1 has logit α·|h|²; the two rows differ by log-odds of EOS)."""
    token_id = tokenizer.convert_tokens_to_ids(token)
    model = constant_output_model(len(tokenizer), token_id)
    hidden = torch.ones(model.config.hidden_size)
    logit = float(model.lm_head.weight[token_id].detach() @ hidden)
    with torch.no_grad():
        model.lm_head.weight[tokenizer.eos_token_id] = 1.0 + math.log(eos_probability / (1 - eos_probability)) / logit
    return model


def prefers_longer(prompts, first, second):
    return [0.0 if len(a) > len(b) else 1.0 if len(a) < len(b) else 0.5 for a, b in zip(first, second)]


@pytest.fixture
def context(tokenizer, tmp_path):
    policy, reference = says_until_eos(tokenizer, "A", 0.1), says_until_eos(tokenizer, "B", 0.3)
    return EvalContext(
        policy=policy,
        tokenizer=tokenizer,
        prompts=PROMPTS,
        score_pairs=lambda which: None,
        reference_model=lambda: contextlib.nullcontext(reference),
        reference_note="a model saying B",
        beta=0.1,
        output_dir=tmp_path,
        judge=prefers_longer,
    )


def test_a_length_only_judge_passes_raw_but_not_length_controlled(context, tmp_path):
    result = win_rate(context, **SETTINGS)
    m, d = result.metrics, result.details
    assert m["mean_length_policy"] > 2 * m["mean_length_reference"] > 0
    assert result.passed and m["win_rate"] > 0.7 and d["headline"] == "win_rate"
    assert m["lc_passed"] is False and m["confounded"] is True and m["lc_win_rate"] is None
    assert any(
        w.startswith("length and preference are confounded: the length difference alone predicts")
        for w in d["warnings"]
    )
    # the check's LC metrics are exactly the public function's on the same verdicts and lengths
    scores, differences = d["prompt_scores"], d["length_differences"]
    assert len(scores) == len(differences) == 40 and all(s in (0.0, 0.5, 1.0) for s in scores)
    assert differences == [p - r for p, r in zip(d["policy_lengths"], d["reference_lengths"])]
    assert (
        sum(d["policy_lengths"]) / 40 == m["mean_length_policy"]
        and sum(d["reference_lengths"]) / 40 == m["mean_length_reference"]
    )
    assert all((s == 1.0) == (x > 0) and (s == 0.0) == (x < 0) for s, x in zip(scores, differences))
    strict = win_rate(context, **SETTINGS, length_controlled=True)
    assert strict.passed is False and strict.details["headline"] == "lc_win_rate" and strict.interval is None
    assert strict.details["reasons"][0].startswith(
        "the length-controlled win rate is not estimable: the length difference"
    )
    report = write_report([strict], tmp_path, [])
    assert (
        "length_preference.png" in report["files"] and (tmp_path / "eval" / "length_preference.png").stat().st_size > 0
    )
    text = (tmp_path / "eval" / "report.md").read_text()
    assert "| lc_win_rate | - |" in text and "| mean_length_policy |" in text and "lc_win_rate = -" in text
    assert (
        json.loads((tmp_path / "eval" / "report.json").read_text())["checks"]["win_rate"]["metrics"]["lc_win_rate"]
        is None
    )


def test_the_check_decides_with_exactly_the_public_function(context, tmp_path):
    """A judge that ignores length and prefers the policy on 30 of 40 prompts: LC estimable, equal to the function's."""

    calls = []

    def quality(prompts, first, second):
        """The check asks with the policy's answers first, then second: the policy is better on i % 4 != 0."""
        calls.append(len(prompts))
        policy_first = len(calls) % 2 == 1
        return [0.0 if policy_first == (i % 4 != 0) else 1.0 for i in range(len(prompts))]

    context.judge = quality
    result = win_rate(context, **SETTINGS, length_controlled=True)
    m, d = result.metrics, result.details
    first = [0.0 if i % 4 != 0 else 1.0 for i in range(40)]
    second = [1.0 - f for f in first]
    # the lengths the check measured: Δ per prompt; rebuild both sides from it (only the difference enters the fit)
    reference = [100] * 40
    policy = [100 + x for x in d["length_differences"]]
    expected = length_controlled_verdict(first, second, policy, reference)
    assert m["wins"] == 30 and m["lc_win_rate"] == pytest.approx(expected["lc_win_rate"])
    assert result.interval == pytest.approx((expected["lc_low"], expected["lc_high"]))
    assert result.passed is expected["passed"] and m["lc_passed"] is expected["passed"]
    assert m["length_coefficient"] == pytest.approx(expected["length_coefficient"])
    write_report([result], tmp_path, [])
    assert (tmp_path / "eval" / "length_preference.png").exists()


def test_length_controlled_must_be_a_boolean():
    from dpo_plugin.errors import ConfigError
    from dpo_plugin.evaluation.runner import validate_check_params

    validate_check_params(["win_rate"], {"win_rate": {"length_controlled": True}}, judge="function")
    with pytest.raises(ConfigError, match="length_controlled must be true or false"):
        validate_check_params(["win_rate"], {"win_rate": {"length_controlled": "yes"}}, judge="function")
