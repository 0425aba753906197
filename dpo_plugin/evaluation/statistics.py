"""Confidence intervals and tests for the checks (numpy/scipy): Wilson, the sign test, the tie-aware score interval,
the mean.

Every function but :func:`wilson_interval` works elementwise on arrays (the last axis holding the
sample for :func:`mean_interval`), so a simulation runs the checks' exact arithmetic on many
replications at once. Their coverage is measured in ``benchmarks/simulate_verdicts.py``.
"""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np
from scipy import stats


def check_confidence(confidence: float) -> None:
    """A ValueError unless ``0 < confidence < 1``."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}.")


def _quantile(confidence: float) -> float:
    """z = Φ⁻¹((1 + confidence)/2)."""
    check_confidence(confidence)
    return float(stats.norm.ppf(0.5 + confidence / 2))


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (Wilson 1927; Newcombe 1998, method 3), via scipy.

    The p with |k/n − p| ≤ z·√(p(1 − p)/n); ``scipy.stats.binomtest(k, n).proportion_ci(method="wilson")``,
    whose endpoints are exactly 0 at k = 0 and 1 at k = n. With ``n = 0`` nothing is known: (0, 1).
    """
    check_confidence(confidence)
    if n < 0 or not 0 <= successes <= max(n, 0) or int(successes) != successes:
        raise ValueError(f"wilson_interval needs integers 0 <= successes <= n, got successes={successes}, n={n}.")
    if n == 0:
        return 0.0, 1.0
    ci = stats.binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def sign_test(wins, losses, alternative: Literal["two-sided", "greater"] = "two-sided"):
    """Exact sign-test p-value of ``wins`` against ``losses`` at p = ½ (Dixon & Mood 1946); 1 with none.

    The exact binomial test of wins of m = wins + losses, X ~ Bin(m, ½), as
    ``scipy.stats.binomtest(wins, m, 0.5, alternative).pvalue``, elementwise: ``"greater"`` is
    P(X ≥ wins), ``"two-sided"`` is min(1, 2·P(X ≤ min(wins, losses))) (the binomial is symmetric).
    """
    wins, losses = np.asarray(wins), np.asarray(losses)
    if np.any(wins < 0) or np.any(losses < 0):
        raise ValueError(f"sign_test needs counts >= 0, got wins={wins}, losses={losses}.")
    m = wins + losses
    if alternative == "greater":
        return stats.binom.sf(wins - 1, m, 0.5)
    if alternative == "two-sided":
        return np.minimum(1.0, 2 * stats.binom.cdf(np.minimum(wins, losses), m, 0.5))
    raise ValueError(f"sign_test: alternative must be 'two-sided' or 'greater', got {alternative!r}.")


def score_test(wins, halves, losses, threshold: float):
    """One-sided p-value of H0: mean per-prompt score ≤ ``threshold``, with ties (scores 1, ½, 0).

    The binomial tail P(Bin(n, t) ≥ ⌊S⌋) of the score S = wins + halves/2, the half point of a tie
    rounded down: Hoeffding's (1956) binomial bound on sums of independent trials, made conservative
    for half scores (measured: false passes ≤ 2.5% at t = 0.4, 0.6, 0.7 for every judge kind, n ≤ 200;
    rounding up gave 2.7%). Without ties it is the exact binomial test of wins of n at ``threshold``.
    """
    wins, halves, losses = (np.asarray(v) for v in (wins, halves, losses))
    score = np.floor(wins + halves / 2)
    return stats.binom.sf(score - 1, wins + halves + losses, threshold)


def score_interval(wins, halves, losses, confidence: float = 0.95):
    """Interval for the mean per-prompt score (1 a win, ½ a tie or disagreement, 0 a loss), aware of the ties.

    Agresti & Coull (1998) with the scores' own variance: add z²/2 pseudo-wins and z²/2 pseudo-losses,
    ñ = n + z², μ̃ = (wins + halves/2 + z²/2)/ñ, ṽ = (wins + halves/4 + z²/2)/ñ − μ̃² (a tie varies
    less than a coin flip: the per-prompt variance is μ(1 − μ) − tie_rate/4), then
    μ̃ ± t·√(ṽ/ñ) with t the Student quantile on ñ − 1 degrees of freedom, clipped to [0, 1].
    The t quantile keeps the coverage ≥ 0.94 for every n ≥ 10 (plain z dips to 0.923 at n = 16);
    the endpoints are exactly 0 when every prompt is lost and 1 when every prompt is won.
    """
    z = _quantile(confidence)
    wins, halves, losses = (np.asarray(v, dtype=float) for v in (wins, halves, losses))
    n_tilde = wins + halves + losses + z**2
    centre = (wins + halves / 2 + z**2 / 2) / n_tilde
    variance = np.maximum((wins + halves / 4 + z**2 / 2) / n_tilde - centre**2, 0.0)
    half = stats.t.ppf(0.5 + confidence / 2, n_tilde - 1) * np.sqrt(variance / n_tilde)
    return np.clip(centre - half, 0.0, 1.0), np.clip(centre + half, 0.0, 1.0)


def t_interval(values, confidence: float = 0.95):
    """Student's t interval for the mean of the last axis: x̄ ± t_{n−1}·s/√n (Student 1908), via ``scipy.stats.t``."""
    check_confidence(confidence)
    data = np.asarray(values, dtype=float)
    n = data.shape[-1]
    mean, se = data.mean(axis=-1), data.std(axis=-1, ddof=1) / np.sqrt(n)
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * se
    return mean - half, mean + half


def bootstrap_t_interval(values, confidence: float = 0.95, n_resamples: int = 1999, seed: int = 0):
    """Studentized-bootstrap interval for the mean of the last axis (Hall 1988; Efron & Tibshirani 1993, §12.5).

    [x̄ − t*_{(1+c)/2}·s/√n, x̄ − t*_{(1−c)/2}·s/√n] with t* = (x̄* − x̄)/(s*/√n) over resamples. The
    resamples are counts C ~ Multinomial(n, 1/n), shared by every row, so the resampled moments are
    matrix products; a resample with no spread (s* = 0) is left out, and a row with none left (no
    spread at all) gets (nan, nan).
    """
    check_confidence(confidence)
    data = np.asarray(values, dtype=float)
    n = data.shape[-1]
    mean, se = data.mean(axis=-1), data.std(axis=-1, ddof=1) / np.sqrt(n)
    counts = np.random.default_rng(seed).multinomial(n, np.full(n, 1 / n), size=n_resamples).T / n
    centred = data - mean[..., None]
    shift = centred @ counts
    variance = np.maximum(centred**2 @ counts - shift**2, 0.0) * n / (n - 1)
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # rows with no spread: All-NaN slices
        t_star = np.where(variance > 0, shift / np.sqrt(variance / n), np.nan)
        t_low, t_high = np.nanquantile(t_star, [(1 - confidence) / 2, (1 + confidence) / 2], axis=-1)
    return mean - t_high * se, mean - t_low * se


def mean_interval(values, confidence: float = 0.95, n_resamples: int = 1999, seed: int = 0):
    """Interval for the mean of the last axis: the union of :func:`t_interval` and :func:`bootstrap_t_interval`.

    The t interval is right for normal and heavy symmetric tails (t3) but short on the long side of
    skewed data; the bootstrap-t is second-order right under skew but short for t3. Measured: neither
    alone keeps the coverage ≥ 0.93 for normal, t3 and log-normal margins, the union does (n ≥ 20;
    n ≥ 40 for log-normal). Fewer than 2 values: (nan, nan); values with no spread: (x̄, x̄).
    """
    data = np.asarray(values, dtype=float)
    if data.shape[-1] < 2:
        nan = np.full(data.shape[:-1], np.nan)
        return nan, nan.copy()
    t_low, t_high = t_interval(data, confidence)
    boot_low, boot_high = bootstrap_t_interval(data, confidence, n_resamples, seed)
    return np.fmin(t_low, boot_low), np.fmax(t_high, boot_high)
