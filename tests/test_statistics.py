"""Statistics against scipy, published values and independent computations; bootstrap coverage; win-rate scoring."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from dpo_plugin.evaluation.statistics import (
    WinRateStats,
    bootstrap_interval,
    margin_statistics,
    prompt_outcome,
    score_win_rate,
    sign_test,
    wilson_interval,
)


@pytest.mark.parametrize("k, n", [(0, 10), (3, 10), (7, 10), (10, 10), (45, 80), (1, 1), (500, 1000)])
@pytest.mark.parametrize("confidence", [0.95, 0.9, 0.99])
def test_wilson_matches_scipy_for_integer_successes(k, n, confidence):
    expected = stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    assert wilson_interval(k, n, confidence) == pytest.approx((expected.low, expected.high), abs=1e-12)


@pytest.mark.parametrize(
    "k, n, low, high",
    # Newcombe (1998), Statistics in Medicine 17:857-872, Table I, method 3 (score interval)
    [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718)],
)
def test_wilson_published_values(k, n, low, high):
    got = wilson_interval(k, n)
    assert (round(got[0], 4), round(got[1], 4)) == (low, high)


@pytest.mark.parametrize("successes, n", [(7.5, 10), (2.5, 4), (0.5, 3), (19.5, 20)])
def test_wilson_fractional_successes_solve_the_score_equation(successes, n):
    # Independently: the bounds are the roots of (p̂ − p)² = z²·p(1 − p)/n, a quadratic in p.
    z = stats.norm.ppf(0.975)
    p_hat = successes / n
    roots = np.sort(np.roots([1 + z**2 / n, -(2 * p_hat + z**2 / n), p_hat**2]).real)
    assert wilson_interval(successes, n) == pytest.approx(tuple(roots), abs=1e-12)
    assert wilson_interval(math.floor(successes), n)[0] < wilson_interval(successes, n)[0]


def test_wilson_edges_and_bad_input():
    assert wilson_interval(0, 0) == (0.0, 1.0)  # nothing known
    for successes, n, confidence in [(11, 10, 0.95), (-1, 10, 0.95), (1, -1, 0.95), (5, 10, 1.0), (5, 10, 0)]:
        with pytest.raises(ValueError):
            wilson_interval(successes, n, confidence)


def test_sign_test_by_hand_and_scipy():
    # 9 of 10 untied: two-sided exact p = 2·P(X ≥ 9), X ~ Bin(10, ½) = 2·11/1024
    assert sign_test(9, 1) == pytest.approx(22 / 1024, rel=1e-12)
    assert sign_test(1, 9) == sign_test(9, 1)
    assert sign_test(15, 5) == pytest.approx(2 * sum(math.comb(20, k) for k in range(15, 21)) / 2**20, rel=1e-12)
    assert sign_test(12, 3) == pytest.approx(stats.binomtest(12, 15, 0.5).pvalue, rel=1e-12)
    assert sign_test(5, 5) == 1.0 and sign_test(0, 0) == 1.0
    with pytest.raises(ValueError):
        sign_test(-1, 3)


def test_bootstrap_covers_the_true_mean_about_95_percent():
    rng = np.random.default_rng(0)
    trials = 300
    covered = 0
    for trial in range(trials):
        sample = rng.normal(1.0, 2.0, size=50)
        low, high = bootstrap_interval(sample, n_resamples=500, seed=trial)
        assert low < sample.mean() < high
        covered += low <= 1.0 <= high
    # Bootstrap intervals of a mean run a little below nominal at n = 50 (about 93-94% here, measured
    # over 1000 trials); 300 trials add a binomial spread of ±1.4 points.
    assert 0.90 <= covered / trials <= 0.98


def test_bootstrap_degenerate_and_reproducible():
    assert bootstrap_interval([2.0]) == (2.0, 2.0)
    assert bootstrap_interval([1.5, 1.5, 1.5]) == (1.5, 1.5)
    assert all(math.isnan(v) for v in bootstrap_interval([]))
    low, high = bootstrap_interval([1.0, 2.0])  # two values: the resampled means are 1, 1.5 and 2
    assert 1.0 <= low <= high <= 2.0
    data = np.random.default_rng(1).normal(size=30)
    assert bootstrap_interval(data, seed=3) == bootstrap_interval(data, seed=3)
    wide, narrow = bootstrap_interval(data, confidence=0.99), bootstrap_interval(data, confidence=0.5)
    assert wide[0] < narrow[0] < narrow[1] < wide[1]
    with pytest.raises(ValueError, match="finite"):
        bootstrap_interval([1.0, math.nan])


@pytest.mark.parametrize(
    "first, second, outcome",
    [(0, 1, "win"), (1, 0, "loss"), (0, 0, "tie"), (1, 1, "tie"), (0.5, 1, "tie"), (0, 0.5, "tie"), (0.5, 0.5, "tie"),
     (None, 1, "failure"), (0, None, "failure"), (math.nan, 1, "failure"), (True, 1, "failure"), (2, 1, "failure"),
     ("A", 1, "failure"), (np.float64(0.0), np.int64(1), "win")],
)  # fmt: skip
def test_prompt_outcome(first, second, outcome):
    assert prompt_outcome(first, second) == outcome


@pytest.mark.parametrize("preferred", [0, 1])
def test_a_purely_position_biased_judge_gives_exactly_one_half(preferred):
    n = 30  # the judge always prefers the answer shown first (0) or always the second (1)
    result = score_win_rate([preferred] * n, [preferred] * n)
    assert result.win_rate == 0.5 and result.ties == n and result.wins == result.losses == 0
    assert result.tie_rate == 1.0 and result.p_value == 1.0
    assert result.interval == pytest.approx(wilson_interval(15, 30))
    assert result.interval[0] < 0.5  # so a threshold of 0.5 is not passed


def test_win_rate_counts_ties_and_failures():
    # pairs (policy first, policy second): win, win, loss, tie, failure, failure, disagreement (tie)
    result = score_win_rate([0, 0, 1, 0.5, None, 0, 1], [1, 1, 0, 1, 1, math.nan, 1])
    assert (result.wins, result.losses, result.ties, result.failures, result.n) == (2, 1, 2, 2, 5)
    assert result.win_rate == pytest.approx((2 + 0.5 * 2) / 5) and result.tie_rate == pytest.approx(2 / 5)
    assert result.interval == pytest.approx(wilson_interval(3.0, 5))
    assert result.p_value == pytest.approx(stats.binomtest(2, 3, 0.5).pvalue)
    assert result.to_dict() == {
        "wins": 2, "losses": 1, "ties": 2, "failures": 2, "n": 5, "win_rate": result.win_rate,
        "tie_rate": result.tie_rate, "interval": list(result.interval), "p_value": result.p_value,
    }  # fmt: skip


def test_a_failure_is_never_a_win():
    # the same prompts with the wins' second verdicts failing: fewer prompts, and none of them a win
    assert score_win_rate([0, 0, 1], [1, None, 0]).wins == 1
    all_failed = score_win_rate([0, 0], [None, math.nan])
    assert all_failed.wins == 0 and all_failed.failures == 2


def test_win_rate_with_no_usable_prompts():
    for first, second in [([None, "A"], [1, 0]), ([], [])]:
        result = score_win_rate(first, second)
        assert result.n == 0 and result.wins == 0 and math.isnan(result.win_rate) and math.isnan(result.tie_rate)
        assert result.interval == (0.0, 1.0) and result.p_value == 1.0
    with pytest.raises(ValueError, match="verdicts"):
        score_win_rate([0, 1], [1])


def test_win_rate_all_wins():
    result = score_win_rate([0] * 20, [1] * 20)
    assert isinstance(result, WinRateStats) and result.win_rate == 1.0 and result.interval[1] == 1.0
    assert result.interval[0] == pytest.approx(stats.binomtest(20, 20).proportion_ci(method="wilson").low)
    assert result.p_value == pytest.approx(2 / 2**20)


def test_margin_statistics_by_hand():
    out = margin_statistics([1.0, 2.0, -1.0, 0.5], [0.0, 1.0, 0.0, 0.5])
    # margins 1, 1, −1, 0: mean 0.25; strict wins 2 of 4 (the zero margin is not a win)
    assert out["n"] == 4 and out["margin_mean"] == pytest.approx(0.25)
    assert out["accuracy"] == 0.5 and out["accuracy_interval"] == pytest.approx(list(wilson_interval(2, 4)))
    assert out["margin_interval"] == pytest.approx(list(bootstrap_interval([1.0, 1.0, -1.0, 0.0])))
    assert out["chosen_reward_mean"] == pytest.approx(0.625) and out["rejected_reward_mean"] == pytest.approx(0.375)
    empty = margin_statistics([], [])
    assert empty["n"] == 0 and math.isnan(empty["margin_mean"]) and empty["accuracy_interval"] == [0.0, 1.0]
    with pytest.raises(ValueError, match="one chosen and one rejected"):
        margin_statistics([1.0, 2.0], [1.0])
