"""Confidence intervals and tests for the checks, from scipy: Wilson, the sign test, the bootstrap."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats


def wilson_interval(successes: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion ``successes/n`` (Wilson 1927).

    ``successes`` may be fractional (wins + ½·ties). ``n = 0`` gives the uninformative (0, 1).
    """
    if n <= 0:
        return 0.0, 1.0
    z = stats.norm.ppf(0.5 + confidence / 2)
    p = successes / n
    denominator = 1 + z**2 / n
    centre = (p + z**2 / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def sign_test(wins: int, losses: int) -> float:
    """Two-sided sign test p-value on the untied pairs (exact binomial, p = ½); 1.0 with none."""
    if wins + losses == 0:
        return 1.0
    return float(stats.binomtest(wins, wins + losses, 0.5).pvalue)


def bootstrap_interval(
    values: Sequence[float], confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """BCa bootstrap interval of the mean (Efron 1987); a single or constant sample gives (mean, mean)."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return math.nan, math.nan
    if data.size < 2 or np.ptp(data) == 0:
        return float(data.mean()), float(data.mean())
    result = stats.bootstrap(
        (data,), np.mean, confidence_level=confidence, n_resamples=n_resamples, method="BCa", random_state=seed
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


@dataclass
class WinRateStats:
    """Per-prompt win/tie/loss counts of the policy against the reference, and their statistics."""

    wins: int
    losses: int
    ties: int
    failures: int
    n: int
    win_rate: float
    tie_rate: float
    interval: tuple[float, float]
    p_value: float

    def to_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["interval"] = list(self.interval)
        return out


def _valid(verdict: object) -> bool:
    return verdict in (0, 0.5, 1) and not isinstance(verdict, bool)


def score_win_rate(
    policy_first: Sequence[float | None], policy_second: Sequence[float | None], confidence: float = 0.95
) -> WinRateStats:
    """Win rate of the policy from a judge asked in both orders.

    ``policy_first[i]`` is the verdict on (first = policy, second = reference), ``policy_second[i]`` on
    (first = reference, second = policy); a verdict is 0 (first better), 1 (second better), 0.5 (tie)
    or None (judge failure). Per prompt: 1 when the policy wins in both orders, 0 when it loses in
    both, ½ otherwise (disagreement or tie); a failure in either order excludes the prompt (counted in
    ``failures``, never a win). Win rate = mean score; Wilson interval on (wins + ½·ties) of n; sign
    test on the untied prompts.
    """
    if len(policy_first) != len(policy_second):
        raise ValueError(f"{len(policy_first)} verdicts in one order but {len(policy_second)} in the other.")
    wins = losses = ties = failures = 0
    for a, b in zip(policy_first, policy_second):
        if not (_valid(a) and _valid(b)):
            failures += 1
        elif a == 0 and b == 1:
            wins += 1
        elif a == 1 and b == 0:
            losses += 1
        else:
            ties += 1
    n = wins + losses + ties
    score = wins + 0.5 * ties
    return WinRateStats(
        wins=wins,
        losses=losses,
        ties=ties,
        failures=failures,
        n=n,
        win_rate=score / n if n else math.nan,
        tie_rate=ties / n if n else math.nan,
        interval=wilson_interval(score, n, confidence),
        p_value=sign_test(wins, losses),
    )


def margin_statistics(
    chosen_rewards: Sequence[float], rejected_rewards: Sequence[float], confidence: float = 0.95, seed: int = 0
) -> dict[str, object]:
    """Implicit-reward margins of held-out pairs: mean margin with a bootstrap interval, accuracy with Wilson's.

    Accuracy counts strict wins only (a tie, margin 0, is not a win).
    """
    chosen = np.asarray(chosen_rewards, dtype=float)
    rejected = np.asarray(rejected_rewards, dtype=float)
    margins = chosen - rejected
    n = int(margins.size)
    correct = int((margins > 0).sum())
    return {
        "n": n,
        "margin_mean": float(margins.mean()) if n else math.nan,
        "margin_interval": list(bootstrap_interval(margins, confidence, seed=seed)),
        "accuracy": correct / n if n else math.nan,
        "accuracy_interval": list(wilson_interval(correct, n, confidence)),
        "chosen_reward_mean": float(chosen.mean()) if n else math.nan,
        "rejected_reward_mean": float(rejected.mean()) if n else math.nan,
    }
