"""Statistics against scipy and known values; bootstrap coverage on simulated data; win-rate scoring."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from dpo_plugin.evaluation.statistics import (
    bootstrap_interval,
    margin_statistics,
    score_win_rate,
    sign_test,
    wilson_interval,
)


@pytest.mark.parametrize("k, n", [(0, 10), (3, 10), (7, 10), (10, 10), (45, 80), (1, 1)])
def test_wilson_matches_scipy(k, n):
    expected = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert wilson_interval(k, n) == pytest.approx((expected.low, expected.high), abs=1e-12)


def test_wilson_known_value_and_edges():
    # Newcombe (1998), Table I: 81 successes of 263 → (0.2553, 0.3662)
    low, high = wilson_interval(81, 263)
    assert round(low, 4) == 0.2553 and round(high, 4) == 0.3662
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low, high = wilson_interval(7.5, 10)  # fractional: half a tie
    assert wilson_interval(7, 10)[0] < low < wilson_interval(8, 10)[0]


def test_sign_test():
    assert sign_test(9, 1) == pytest.approx(2 * sum(math.comb(10, k) for k in range(9, 11)) / 2**10)
    assert sign_test(5, 5) == 1.0 and sign_test(0, 0) == 1.0


def test_bootstrap_covers_the_mean_about_95_percent():
    rng = np.random.default_rng(0)
    covered = 0
    trials = 200
    for trial in range(trials):
        sample = rng.normal(1.0, 2.0, size=40)
        low, high = bootstrap_interval(sample, n_resamples=400, seed=trial)
        covered += low <= 1.0 <= high
    assert 0.89 <= covered / trials <= 0.99


def test_bootstrap_degenerate_samples():
    assert bootstrap_interval([2.0]) == (2.0, 2.0)
    assert bootstrap_interval([1.5, 1.5, 1.5]) == (1.5, 1.5)
    assert all(math.isnan(v) for v in bootstrap_interval([]))


def test_position_biased_judge_gives_one_half():
    n = 30
    first_always = score_win_rate([0.0] * n, [0.0] * n)  # always prefers whatever is shown first
    assert first_always.win_rate == 0.5 and first_always.ties == n and first_always.wins == first_always.losses == 0
    assert first_always.p_value == 1.0


def test_win_rate_counts_and_failures():
    # orders: (policy first, policy second); 0 = first better, 1 = second better
    result = score_win_rate([0, 0, 1, 0.5, None, 0, 1], [1, 1, 0, 1, 1, None, 1])
    assert (result.wins, result.losses, result.ties, result.failures, result.n) == (2, 1, 2, 2, 5)
    assert result.win_rate == pytest.approx((2 + 0.5 * 2) / 5) and result.tie_rate == pytest.approx(0.4)
    assert result.interval == pytest.approx(wilson_interval(3, 5))
    assert result.p_value == pytest.approx(stats.binomtest(2, 3).pvalue)
    nothing = score_win_rate([None, "A"], [1, 0])
    assert nothing.n == 0 and nothing.failures == 2 and math.isnan(nothing.win_rate) and nothing.interval == (0.0, 1.0)


def test_margin_statistics():
    out = margin_statistics([1.0, 2.0, -1.0, 0.5], [0.0, 1.0, 0.0, 0.5])
    assert out["n"] == 4 and out["margin_mean"] == pytest.approx(0.25)
    assert out["accuracy"] == 0.5  # the tie (0.5 vs 0.5) is not a win
    assert out["accuracy_interval"] == pytest.approx(list(wilson_interval(2, 4)))
    assert out["chosen_reward_mean"] == pytest.approx(0.625)
