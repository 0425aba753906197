"""Confidence intervals and tests for the checks (scipy): Wilson, the sign test, the bootstrap, win-rate scoring."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from scipy import stats

from .judges.base import FIRST, SECOND, as_verdict

Outcome = Literal["win", "loss", "tie", "failure"]


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}.")


def wilson_interval(successes: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion (Wilson 1927; Newcombe 1998, method 3).

    The set of p with |p̂ − p| ≤ z·√(p(1 − p)/n), p̂ = successes/n, z = Φ⁻¹((1 + confidence)/2):
    (p̂ + z²/2n ± z·√(p̂(1 − p̂)/n + z²/4n²)) / (1 + z²/n). ``successes`` may be fractional
    (wins + ½·ties). With ``n = 0`` nothing is known: (0, 1).
    """
    _check_confidence(confidence)
    if n < 0 or not 0 <= successes <= max(n, 0):
        raise ValueError(f"wilson_interval needs 0 <= successes <= n, got successes={successes}, n={n}.")
    if n == 0:
        return 0.0, 1.0
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    p = successes / n
    denominator = 1 + z**2 / n
    centre = (p + z**2 / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    return max(0.0, centre - half), min(1.0, centre + half)


def sign_test(wins: int, losses: int) -> float:
    """Two-sided sign-test p-value: exact binomial test of ``wins`` of ``wins + losses`` at p = ½; 1.0 with none."""
    if wins < 0 or losses < 0:
        raise ValueError(f"sign_test needs counts >= 0, got wins={wins}, losses={losses}.")
    if wins + losses == 0:
        return 1.0
    return float(stats.binomtest(int(wins), int(wins + losses), 0.5).pvalue)


def bootstrap_interval(
    values: Sequence[float], confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """BCa bootstrap interval of the mean (Efron 1987), via ``scipy.stats.bootstrap``.

    A single value or constant data has no spread to resample: (mean, mean). No values: (nan, nan).
    """
    _check_confidence(confidence)
    data = np.asarray(values, dtype=float)
    if data.size and not np.isfinite(data).all():
        raise ValueError(f"bootstrap_interval needs finite values; got {int((~np.isfinite(data)).sum())} that are not.")
    if data.size == 0:
        return math.nan, math.nan
    if data.size < 2 or np.ptp(data) == 0:
        return float(data.mean()), float(data.mean())
    result = stats.bootstrap(
        (data,),
        np.mean,
        confidence_level=confidence,
        n_resamples=n_resamples,
        method="BCa",
        rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def prompt_outcome(policy_first: Any, policy_second: Any) -> Outcome:
    """One prompt's outcome from the verdicts with the policy shown first and shown second.

    ``"win"``: the judge preferred the policy in both orders (0 then 1); ``"loss"``: the reference in
    both (1 then 0); ``"failure"``: either verdict is missing or invalid (None, NaN, …);
    ``"tie"``: anything else (a tie in either order, or the orders disagree, e.g. position bias).
    """
    first, second = as_verdict(policy_first), as_verdict(policy_second)
    if first is None or second is None:
        return "failure"
    if (first, second) == (FIRST, SECOND):
        return "win"
    if (first, second) == (SECOND, FIRST):
        return "loss"
    return "tie"


@dataclass(frozen=True)
class WinRateStats:
    """The policy's per-prompt wins, losses, ties and judge failures against the reference, and their statistics.

    ``n`` = wins + losses + ties (failures excluded); ``win_rate`` = (wins + ½·ties)/n and
    ``tie_rate`` = ties/n (NaN when n = 0); ``interval``: Wilson on (wins + ½·ties) of n;
    ``p_value``: two-sided sign test on the untied prompts.
    """

    wins: int
    losses: int
    ties: int
    failures: int
    n: int
    win_rate: float
    tie_rate: float
    interval: tuple[float, float]
    p_value: float

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["interval"] = list(self.interval)
        return out


def score_win_rate(policy_first: Sequence[Any], policy_second: Sequence[Any], confidence: float = 0.95) -> WinRateStats:
    """Win rate of the policy from a judge asked twice per prompt, in both orders.

    ``policy_first[i]`` is the verdict on (first = policy, second = reference), ``policy_second[i]``
    on (first = reference, second = policy); a verdict is 0 (first better), 1 (second better), 0.5
    (tie) or None (judge failure). Each prompt scores 1 (win), 0 (loss) or ½ (tie, disagreement);
    see :func:`prompt_outcome`. A failure is never a win: the prompt is left out of n.
    """
    if len(policy_first) != len(policy_second):
        raise ValueError(f"{len(policy_first)} verdicts with the policy first but {len(policy_second)} with it second.")
    outcomes = [prompt_outcome(a, b) for a, b in zip(policy_first, policy_second)]
    wins, losses, ties = outcomes.count("win"), outcomes.count("loss"), outcomes.count("tie")
    n = wins + losses + ties
    score = wins + 0.5 * ties
    return WinRateStats(
        wins=wins,
        losses=losses,
        ties=ties,
        failures=outcomes.count("failure"),
        n=n,
        win_rate=score / n if n else math.nan,
        tie_rate=ties / n if n else math.nan,
        interval=wilson_interval(score, n, confidence),
        p_value=sign_test(wins, losses),
    )


def margin_statistics(
    chosen_rewards: Sequence[float], rejected_rewards: Sequence[float], confidence: float = 0.95, seed: int = 0
) -> dict[str, Any]:
    """Held-out implicit-reward statistics: mean margin r_w − r_l with a BCa bootstrap interval, accuracy with Wilson's.

    Accuracy counts strict wins r_w > r_l only (a tie is not a win). Also the mean chosen and
    rejected rewards and n; means are NaN when there are no pairs.
    """
    chosen = np.asarray(chosen_rewards, dtype=float)
    rejected = np.asarray(rejected_rewards, dtype=float)
    if chosen.shape != rejected.shape or chosen.ndim != 1:
        raise ValueError(
            f"Need one chosen and one rejected reward per pair; got shapes {chosen.shape} and {rejected.shape}."
        )
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
