"""Statistics against scipy, published values and computations written out independently."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from dpo_plugin.evaluation.statistics import (
    bootstrap_t_interval,
    mean_interval,
    score_interval,
    sign_test,
    t_interval,
    wilson_interval,
)

Z = 1.959963984540054  # Φ⁻¹(0.975)


@pytest.mark.parametrize("k, n", [(0, 10), (3, 10), (7, 10), (10, 10), (45, 80), (1, 1), (500, 1000)])
@pytest.mark.parametrize("confidence", [0.95, 0.9, 0.99])
def test_wilson_matches_scipy(k, n, confidence):
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


def test_wilson_endpoints_are_exact_at_0_and_n():
    # main's closed form gave 2.78e-17 for (0, 7), so `threshold: 0` passed a policy that lost every pair
    for n in range(1, 1001):
        assert wilson_interval(0, n)[0] == 0.0 and wilson_interval(n, n)[1] == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)  # nothing known
    for successes, n, confidence in [
        (11, 10, 0.95),
        (-1, 10, 0.95),
        (1, -1, 0.95),
        (2.5, 10, 0.95),
        (5, 10, 1.0),
        (5, 10, 0),
    ]:
        with pytest.raises(ValueError):
            wilson_interval(successes, n, confidence)


def test_sign_test_by_hand_and_scipy():
    # 9 of 10 untied: two-sided exact p = 2·P(X ≥ 9), X ~ Bin(10, ½) = 2·11/1024; one-sided 11/1024
    assert sign_test(9, 1) == pytest.approx(22 / 1024, rel=1e-12)
    assert sign_test(9, 1, "greater") == pytest.approx(11 / 1024, rel=1e-12)
    assert sign_test(1, 9, "greater") == pytest.approx(1 - 1 / 1024, rel=1e-12)  # P(X ≥ 1)
    assert sign_test(15, 5) == pytest.approx(2 * sum(math.comb(20, k) for k in range(15, 21)) / 2**20, rel=1e-12)
    assert sign_test(5, 5) == 1.0 and sign_test(0, 0) == 1.0 and sign_test(0, 0, "greater") == 1.0
    wins, losses = np.meshgrid(np.arange(0, 25), np.arange(0, 25))
    for alternative in ("two-sided", "greater"):
        expected = [
            stats.binomtest(w, w + lost, 0.5, alternative=alternative).pvalue if w + lost else 1.0
            for w, lost in zip(wins.ravel(), losses.ravel())
        ]
        assert sign_test(wins.ravel(), losses.ravel(), alternative) == pytest.approx(expected, rel=1e-10)
    with pytest.raises(ValueError):
        sign_test(-1, 3)
    with pytest.raises(ValueError, match="alternative"):
        sign_test(1, 3, "less")  # type: ignore[arg-type]


def _score_interval_by_hand(wins: int, halves: int, losses: int) -> tuple[float, float]:
    """Agresti–Coull with z²/2 pseudo-wins and pseudo-losses, the scores' variance and a t quantile, written out."""
    n = wins + halves + losses + Z**2
    scores = [1.0] * wins + [0.5] * halves + [0.0] * losses
    weights = [1.0] * len(scores) + [Z**2 / 2, Z**2 / 2]
    scores += [1.0, 0.0]
    mean = sum(w * s for w, s in zip(weights, scores)) / n
    variance = sum(w * (s - mean) ** 2 for w, s in zip(weights, scores)) / n
    half = stats.t.ppf(0.975, n - 1) * math.sqrt(variance / n)
    return max(0.0, mean - half), min(1.0, mean + half)


@pytest.mark.parametrize(
    "wins, halves, losses", [(7, 0, 3), (12, 20, 8), (3, 30, 2), (0, 40, 0), (18, 1, 1), (1, 0, 0)]
)
def test_score_interval_by_hand(wins, halves, losses):
    assert score_interval(wins, halves, losses) == pytest.approx(
        _score_interval_by_hand(wins, halves, losses), abs=1e-12
    )


def test_score_interval_is_narrower_than_wilson_when_ties_carry_the_score():
    # 40 prompts, 34 of them ties: Wilson on wins + ½·ties (main's interval) treats each as half a coin flip
    low, high = score_interval(4, 34, 2)
    p, n = (4 + 17) / 40, 40
    wilson_half = Z / (1 + Z**2 / n) * math.sqrt(p * (1 - p) / n + Z**2 / (4 * n**2))
    assert high - low < 0.7 * 2 * wilson_half


def test_score_interval_endpoints_and_estimate():
    n = np.arange(0, 401)
    assert np.all(score_interval(0, 0, n)[0] == 0.0) and np.all(score_interval(n, 0, 0)[1] == 1.0)
    assert score_interval(0, 0, 0) == (0.0, 1.0)  # nothing known
    for n in (1, 5, 20, 60):  # every outcome's estimate lies inside its interval
        wins, halves = (a.ravel() for a in np.meshgrid(np.arange(n + 1), np.arange(n + 1)))
        keep = wins + halves <= n
        wins, halves = wins[keep], halves[keep]
        low, high = score_interval(wins, halves, n - wins - halves)
        estimate = (wins + halves / 2) / n
        assert np.all((low <= estimate) & (estimate <= high))
    wide, narrow = score_interval(12, 5, 3, 0.99), score_interval(12, 5, 3, 0.5)
    assert wide[0] < narrow[0] < narrow[1] < wide[1]


def test_t_interval_matches_scipy():
    data = np.random.default_rng(0).normal(1.0, 2.0, size=(4, 25))
    low, high = t_interval(data, 0.9)
    for row, lo, hi in zip(data, low, high):
        expected = stats.t.interval(0.9, row.size - 1, loc=row.mean(), scale=stats.sem(row))
        assert (lo, hi) == pytest.approx(expected, rel=1e-12)


def test_bootstrap_t_against_an_explicit_resampling_loop():
    data = np.random.default_rng(1).lognormal(size=30)
    n, resamples = data.size, 500
    counts = np.random.default_rng(4).multinomial(n, np.full(n, 1 / n), size=resamples)  # the draws the function makes
    se = data.std(ddof=1) / math.sqrt(n)
    t_star = []
    for row in counts:
        resample = np.repeat(data, row)
        t_star.append((resample.mean() - data.mean()) / (resample.std(ddof=1) / math.sqrt(n)))
    t_low, t_high = np.quantile(t_star, [0.025, 0.975])
    expected = (data.mean() - t_high * se, data.mean() - t_low * se)
    assert bootstrap_t_interval(data, n_resamples=resamples, seed=4) == pytest.approx(expected, rel=1e-9)
    # skewed to the right: the long side is the upper one, unlike the symmetric t interval
    low, high = bootstrap_t_interval(data, n_resamples=resamples, seed=4)
    assert high - data.mean() > data.mean() - low


def test_mean_interval_is_the_union_and_handles_degenerate_data():
    data = np.random.default_rng(2).standard_t(3, size=(5, 20))
    t_low, t_high = t_interval(data)
    boot_low, boot_high = bootstrap_t_interval(data, seed=3)
    low, high = mean_interval(data, seed=3)
    assert np.array_equal(low, np.minimum(t_low, boot_low)) and np.array_equal(high, np.maximum(t_high, boot_high))
    rows = [mean_interval(row, seed=3) for row in data]  # a row alone gets the same interval (the same resamples)
    assert np.allclose([r[0] for r in rows], low, rtol=1e-12) and np.allclose([r[1] for r in rows], high, rtol=1e-12)
    assert mean_interval([1.5, 1.5, 1.5]) == (1.5, 1.5)
    assert all(math.isnan(v) for v in mean_interval([2.0])) and all(math.isnan(v) for v in mean_interval([]))
    assert mean_interval(data[0], seed=5) == mean_interval(data[0], seed=5)
