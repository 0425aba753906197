"""The length-controlled win rate: values worked out independently, bad input,
and simulated judges whose truth is known.

The simulated judges are :class:`dpo_plugin.evaluation.simulation.LengthJudge`: a judge that prefers the longer answer
and nothing else (true LC 0.5) with the policy answering longer, and a judge with a quality preference and no length
effect. ``benchmarks/simulate_length_control.py`` measures the same properties over thousands of runs.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize, special, stats

import dpo_plugin.evaluation as evaluation
from dpo_plugin.evaluation.length_control import MIN_PROMPTS, fit_length_model, length_feature
from dpo_plugin.evaluation.simulation import LengthJudge, simulate_lengths
from dpo_plugin.evaluation.verdicts import win_rate_verdict

WIN, LOSS, TIE = (0, 1), (1, 0), (0.5, 0.5)


def verdicts(*outcomes: tuple[float | None, float | None]) -> tuple[list, list]:
    return [o[0] for o in outcomes], [o[1] for o in outcomes]


def test_it_is_public():
    assert evaluation.length_controlled_verdict is evaluation.length_control.length_controlled_verdict
    assert "length_controlled_verdict" in evaluation.__all__


def test_equal_lengths_give_the_pseudo_counted_win_rate_and_its_sandwich_interval():
    """With every length difference 0 only the intercept is fitted: σ(θ̂) = (S + ½)/(n + 1), and the HC1 sandwich
    standard error of θ̂ is √(Σw(y − p)²)/(Σw·p(1 − p)) · √(ñ/(ñ − 2)), worked out here by hand."""
    first, second = verdicts(*[WIN] * 20, *[TIE] * 4, *[LOSS] * 6)
    v = evaluation.length_controlled_verdict(first, second, [50] * 30, [50] * 30)
    p = (20 + 4 / 2 + 0.5) / 31
    meat = 20 * (1 - p) ** 2 + 4 * (0.5 - p) ** 2 + 6 * p**2 + 0.5 * (1 - p) ** 2 + 0.5 * p**2
    se = math.sqrt(meat) / (31 * p * (1 - p)) * math.sqrt(31 / 29)
    t = stats.t.ppf(0.975, 29)
    assert v["lc_win_rate"] == pytest.approx(p, abs=1e-9)
    assert v["lc_low"] == pytest.approx(special.expit(special.logit(p) - t * se), abs=1e-7)
    assert v["lc_high"] == pytest.approx(special.expit(special.logit(p) + t * se), abs=1e-7)
    assert math.isnan(v["length_coefficient"]) and v["se_inflation"] == pytest.approx(1.0)
    assert v["confounded"] is False and v["passed"] is (v["conservative_lc_low"] > 0.5)
    assert (v["mean_length_policy"], v["mean_length_reference"], v["policy_longer_share"]) == (50, 50, 0)


def test_the_fit_is_the_maximum_of_the_weighted_quasi_likelihood():
    """θ̂ and φ̂ equal an independent maximisation (scipy) of Σ w·(y log p + (1 − y) log(1 − p)), p = σ(θ + φx),
    over the prompts and the ½ pseudo-win and ½ pseudo-loss at x = 0."""
    rng = np.random.default_rng(3)
    policy, reference = simulate_lengths(60, 15.0, rng)
    first, second = LengthJudge(0.65, 1.5, "independent").verdicts(policy - reference, rng)
    scores = (1 - np.asarray(first) + np.asarray(second)) / 2  # win 1, loss 0, tie or disagreement ½
    x, sd = length_feature(policy, reference)
    assert sd == pytest.approx(np.std(policy - reference, ddof=1)) and np.allclose(
        x, np.tanh((policy - reference) / sd)
    )
    y, xs, w = np.append(scores, [1, 0]), np.append(x, [0, 0]), np.append(np.ones(60), [0.5, 0.5])

    def negative_log_likelihood(params):
        p = special.expit(params[0] + params[1] * xs)
        return -np.sum(w * (y * np.log(p) + (1 - y) * np.log(1 - p)))

    best = optimize.minimize(negative_log_likelihood, [0.0, 0.0], method="BFGS", options={"gtol": 1e-10}).x
    fit = fit_length_model(scores, x)
    assert special.logit(fit.win_rate) == pytest.approx(best[0], abs=1e-5)
    assert fit.coefficient == pytest.approx(best[1], abs=1e-5) and fit.coefficient > 0
    v = evaluation.length_controlled_verdict(first, second, policy, reference)
    assert v["lc_win_rate"] == pytest.approx(fit.win_rate) and v["length_coefficient"] == pytest.approx(fit.coefficient)


def test_too_few_prompts_is_not_estimable_with_the_reason_never_a_number():
    first, second = verdicts(*[WIN] * 20, (None, 1))
    v = evaluation.length_controlled_verdict(first, second, range(21), [3] * 21)
    assert v["lc_win_rate"] is None and v["lc_low"] is None and v["length_coefficient"] is None
    assert v["lc_not_estimable"] == (
        f"only 20 prompts have a verdict in both orders; the length-controlled win rate needs at least {MIN_PROMPTS}"
    )
    assert v["passed"] is False and v["reasons"] == [
        f"the length-controlled win rate is not estimable: {v['lc_not_estimable']}"
    ]


def test_a_constant_length_difference_is_not_estimable():
    first, second = verdicts(*[WIN] * 40)
    v = evaluation.length_controlled_verdict(first, second, [60] * 40, [20] * 40)
    assert (
        v["lc_win_rate"] is None and "+40 tokens longer than the reference's on every prompt" in v["lc_not_estimable"]
    )
    assert v["passed"] is False and win_rate_verdict(first, second)["passed"] is True


def test_bad_lengths_are_refused():
    first, second = verdicts(*[WIN] * 3)
    with pytest.raises(ValueError, match="3 prompts have verdicts but 2 have answer lengths"):
        evaluation.length_controlled_verdict(first, second, [1, 2], [1, 2])
    with pytest.raises(ValueError, match="finite numbers >= 0"):
        evaluation.length_controlled_verdict(first, second, [1, -2, 3], [1, 2, 3])
    with pytest.raises(ValueError, match="one length per prompt"):
        evaluation.length_controlled_verdict(first, second, [1, 2, 3], [1, 2])


def test_failures_count_as_losses_and_garbage_verdicts_are_failures():
    """A judge that fails on (or returns garbage for) some prompts: the decision counts them as losses,
    as the raw one does."""
    rng = np.random.default_rng(11)
    policy, reference = simulate_lengths(80, 0.0, rng)
    first, second = LengthJudge(0.75, 0.0, "consistent").verdicts(policy - reference, rng)
    first, second = list(first), list(second)
    first[:6] = [None, "1", True, 2, None, None]  # 6 failures: 7.5% of the prompts
    v = evaluation.length_controlled_verdict(first, second, policy, reference)
    assert v["failures"] == 6 and v["lc_n"] == 74
    assert v["conservative_lc_win_rate"] < v["lc_win_rate"] and v["conservative_lc_low"] < v["lc_low"]
    first[6:12] = [None] * 6  # now 15%, above max_failure_rate
    v = evaluation.length_controlled_verdict(first, second, policy, reference)
    assert v["passed"] is False and "the judge failed on 15% of prompts (max 10%)" in v["reasons"]


def test_a_judge_preferring_the_longer_answer_passes_raw_but_not_length_controlled():
    """Policy answers 40 tokens longer on average (1 sd); the judge picks the longer answer whatever it says."""
    rng = np.random.default_rng(35)
    policy, reference = simulate_lengths(100, 40.0, rng)
    first, second = LengthJudge(0.5, math.inf, "consistent").verdicts(policy - reference, rng)
    raw = win_rate_verdict(first, second)
    v = evaluation.length_controlled_verdict(first, second, policy, reference)
    assert raw["passed"] and raw["win_rate"] > 0.75
    assert v["confounded"] and v["length_separates"] and not v["passed"]
    assert v["lc_win_rate"] is None and "the length difference alone predicts the verdicts" in v["lc_not_estimable"]
    assert v["reasons"] == [f"the length-controlled win rate is not estimable: {v['lc_not_estimable']}"]


def test_a_noisy_length_judge_rarely_fakes_a_length_controlled_pass():
    """Over 100 seeds (n = 100, φ = 2, policy longer by half an sd): raw passes most, LC at most 5%."""
    rng = np.random.default_rng(1)
    judge, raw, lc = LengthJudge(0.5, 2.0, "independent"), 0, 0
    for _ in range(100):
        policy, reference = simulate_lengths(100, 20.0, rng)
        first, second = judge.verdicts(policy - reference, rng)
        raw += win_rate_verdict(first, second)["passed"]
        lc += evaluation.length_controlled_verdict(first, second, policy, reference)["passed"]
    assert raw >= 70 and lc <= 5


def test_a_quality_judge_without_length_effect_agrees_with_raw():
    """True score 0.7, no length effect, lengths alike: the intervals overlap every time and LC passes as often as raw
    (within a few runs), at n = 40 and 100."""
    rng = np.random.default_rng(2)
    judge = LengthJudge(0.7, 0.0, "independent")
    for n in (40, 100):
        raw = lc = 0
        for _ in range(40):
            policy, reference = simulate_lengths(n, 0.0, rng)
            first, second = judge.verdicts(policy - reference, rng)
            w, v = (
                win_rate_verdict(first, second),
                evaluation.length_controlled_verdict(first, second, policy, reference),
            )
            assert v["lc_low"] <= w["high"] and w["low"] <= v["lc_high"]
            assert abs(v["length_coefficient"]) < 3 * v["length_coefficient_se"]
            raw, lc = raw + w["passed"], lc + v["passed"]
        assert lc >= raw - 3, (n, raw, lc)


def test_the_interval_covers_the_truth_of_a_length_biased_judge():
    """φ = 1, true LC 0.7, policy longer by 20 tokens: 200 runs at n = 60 cover 0.7 at least 90% of the time
    (the benchmark measures ≥ 0.93 over a grid with 400 runs per cell)."""
    rng = np.random.default_rng(7)
    judge, covered = LengthJudge(0.7, 1.0, "consistent"), 0
    for _ in range(200):
        policy, reference = simulate_lengths(60, 20.0, rng)
        v = evaluation.length_controlled_verdict(*judge.verdicts(policy - reference, rng), policy, reference)
        covered += v["lc_low"] <= 0.7 <= v["lc_high"]
    assert covered >= 180
