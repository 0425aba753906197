"""The checks' decisions as pure functions, no model needed: :func:`win_rate_verdict` and :func:`margin_verdict`.

Win rate. The judge saw each prompt twice: ``policy_first[i]`` is its verdict with the policy's
answer shown first, ``policy_second[i]`` with it shown second, in the judges' convention (0: the
first shown is better, 1: the second, 0.5: a tie, None or NaN: the judge failed). A verdict is read
before any arithmetic: anything else (True, "1", 2, …) is not a verdict, and makes the prompt a
failure, counted in ``invalid_verdicts``. Per prompt: a *win* (0 then 1: the policy in both
orders), a *loss* (1 then 0), a *tie* (0.5 in both orders), a *disagreement* (the two orders differ,
e.g. a judge that prefers whatever it is shown first), or a *failure*. A win scores 1, a loss 0, a
tie or a disagreement ½. The decision is vectorised (:func:`decide_win_rate`) so that the
simulations of ``benchmarks/simulate_verdicts.py`` run this very code.

Reward margin. From each held-out pair's implicit rewards: the preference accuracy and the mean
margin, each with its interval (:func:`margin_verdict`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import stats

from .judges.base import NotAVerdict, read_verdict
from .statistics import (
    check_confidence,
    mean_interval,
    score_interval,
    score_test,
    sign_test,
    wilson_interval,
)

logger = logging.getLogger(__name__)

Outcome = Literal["win", "loss", "tie", "disagreement", "failure"]

#: A prompt's cell: 3·i + j for the verdicts VERDICT_ORDER[i] (policy first) and VERDICT_ORDER[j]
#: (policy second); FAILURE_CELL when either failed.
VERDICT_ORDER = (0.0, 0.5, 1.0)
FAILURE_CELL = 9
CELLS = 10
WIN_CELL, TIE_CELL, LOSS_CELL = 2, 4, 6
_PAIRS = [(a, b) for a in VERDICT_ORDER for b in VERDICT_ORDER]
#: Per cell: how many of its two verdicts pick the answer shown first (0), and how many pick one (0 or 1).
FIRST_PICKS = np.array([(a == 0) + (b == 0) for a, b in _PAIRS] + [0])
STRICT_PICKS = np.array([(a != 0.5) + (b != 0.5) for a, b in _PAIRS] + [0])
SECOND_PICKS = STRICT_PICKS - FIRST_PICKS
EXAMPLES_KEPT = 5
#: The conditions of :func:`decide_win_rate`, all needed to pass.
CONDITIONS = ("usable", "failures_allowed", "bound_above", "significant")


def _cell(first: Any, second: Any) -> tuple[int, list[str]]:
    """The prompt's cell and the descriptions of those of its two values that are not verdicts."""
    values = (read_verdict(first), read_verdict(second))
    invalid = [
        f"{order}: {v.description}"
        for order, v in zip(("policy first", "policy second"), values)
        if isinstance(v, NotAVerdict)
    ]
    if invalid or any(math.isnan(v) for v in values):  # type: ignore[arg-type]
        return FAILURE_CELL, invalid
    return 3 * VERDICT_ORDER.index(values[0]) + VERDICT_ORDER.index(values[1]), invalid  # type: ignore[arg-type]


def prompt_outcome(policy_first: Any, policy_second: Any) -> Outcome:
    """One prompt's outcome from its two verdicts: "win", "loss", "tie", "disagreement" or "failure"
    (see the module)."""
    cell, _ = _cell(policy_first, policy_second)
    return {WIN_CELL: "win", LOSS_CELL: "loss", TIE_CELL: "tie", FAILURE_CELL: "failure"}.get(cell, "disagreement")  # type: ignore[return-value]


@dataclass(frozen=True)
class Tally:
    """Counts per prompt outcome, and the judge's picks of the first-shown answer, from counts per cell (``[..., 10]``).

    ``first_favoured`` / ``second_favoured``: prompts whose two verdicts pick the first-shown answer
    more often than the second-shown one / less often.
    """

    wins: np.ndarray
    ties: np.ndarray
    disagreements: np.ndarray
    losses: np.ndarray
    failures: np.ndarray
    first_picks: np.ndarray
    strict_picks: np.ndarray
    first_favoured: np.ndarray
    second_favoured: np.ndarray

    @classmethod
    def from_cells(cls, cell_counts: np.ndarray) -> Tally:
        counts = np.asarray(cell_counts)
        valid = counts[..., :FAILURE_CELL]
        ties_and_disagreements = valid.sum(axis=-1) - counts[..., WIN_CELL] - counts[..., LOSS_CELL]
        return cls(
            wins=counts[..., WIN_CELL],
            ties=counts[..., TIE_CELL],
            disagreements=ties_and_disagreements - counts[..., TIE_CELL],
            losses=counts[..., LOSS_CELL],
            failures=counts[..., FAILURE_CELL],
            first_picks=counts @ FIRST_PICKS,
            strict_picks=counts @ STRICT_PICKS,
            first_favoured=counts @ (FIRST_PICKS > SECOND_PICKS),
            second_favoured=counts @ (FIRST_PICKS < SECOND_PICKS),
        )


def decide_win_rate(
    wins, halves, losses, failures, *, threshold: float, max_failure_rate: float, confidence: float
) -> dict[str, np.ndarray]:
    """The win-rate decision, elementwise on counts of prompts (``halves``: ties and disagreements).

    ``low``, ``high``: :func:`~.statistics.score_interval` on the usable prompts (failures left out).
    The decision is conservative: failures count as losses, so a judge that fails on bad answers
    cannot hide them. Passes when (1) some prompt is usable, (2) failures ≤ ``max_failure_rate`` of
    the prompts, (3) the lower bound with failures as losses exceeds ``threshold`` and (4) a
    one-sided test of "the score is at most ``threshold``" rejects at (1 − confidence)/2: at the
    default ½ the exact sign test of wins against losses + failures (ties set aside), elsewhere
    :func:`~.statistics.score_test` (Hoeffding's binomial bound). (4) caps the false passes at a
    true score equal to the threshold at (1 − confidence)/2 for every n.
    """
    wins, halves, losses, failures = (np.asarray(v) for v in (wins, halves, losses, failures))
    n = wins + halves + losses
    score = wins + halves / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        win_rate, conservative = score / n, score / (n + failures)
    low, high = score_interval(wins, halves, losses, confidence)
    conservative_low, conservative_high = score_interval(wins, halves, losses + failures, confidence)
    conservative_p = (
        sign_test(wins, losses + failures, "greater")
        if threshold == 0.5
        else score_test(wins, halves, losses + failures, threshold)
    )
    conditions = {
        "usable": n > 0,
        "failures_allowed": failures <= max_failure_rate * (n + failures),
        "bound_above": conservative_low > threshold,
        "significant": conservative_p < (1 - confidence) / 2,
    }
    return {
        "win_rate": win_rate,
        "low": low,
        "high": high,
        "p_value": sign_test(wins, losses),
        "conservative_win_rate": conservative,
        "conservative_low": conservative_low,
        "conservative_high": conservative_high,
        "conservative_p_value": conservative_p,
        **conditions,
        "passed": np.logical_and.reduce(list(conditions.values())),
    }


def _check_settings(threshold: float, confidence: float, **rates: float) -> None:
    check_confidence(confidence)
    if not 0 <= threshold < 1:
        raise ValueError(f"threshold must lie in [0, 1), got {threshold!r}.")
    for name, rate in rates.items():
        if not 0 <= rate <= 1:
            raise ValueError(f"{name} must lie in [0, 1], got {rate!r}.")


def _win_rate_reasons(d: dict[str, Any], threshold: float, max_failure_rate: float, confidence: float) -> list[str]:
    """Why the win-rate verdict did not pass, one sentence per failed condition of :func:`decide_win_rate`."""
    reasons = [] if d["usable"] else ["no usable prompts (every judgement failed)"]
    if not d["failures_allowed"]:
        reasons.append(f"the judge failed on {d['failure_rate']:.0%} of prompts (max {max_failure_rate:.0%})")
    if not d["usable"]:
        return reasons
    failures = d["failures"]
    counted = f"with the {failures} judge failures counted as losses, " if failures else ""
    if not d["bound_above"]:
        reasons.append(
            f"{counted}the interval's lower bound {d['conservative_low']:.3f} does not exceed the threshold {threshold}"
        )
    if not d["significant"]:
        test = (
            f"the sign test of {d['wins']} wins against {d['losses'] + failures} losses"
            if threshold == 0.5
            else f"the test of the score above {threshold}"
        )
        reasons.append(
            f"{counted}{test} is not significant "
            f"(one-sided p = {d['conservative_p_value']:.3g}, needs < {(1 - confidence) / 2:.3g})"
        )
    return reasons


def _read_cells(policy_first: Sequence[Any], policy_second: Sequence[Any]) -> tuple[list[int], list[str]]:
    """Each prompt's cell, and a description of every value that is not a verdict."""
    if len(policy_first) != len(policy_second):
        raise ValueError(f"{len(policy_first)} verdicts with the policy first but {len(policy_second)} with it second.")
    cells, invalid = [], []
    for index, (first, second) in enumerate(zip(policy_first, policy_second)):
        cell, bad = _cell(first, second)
        cells.append(cell)
        invalid += [f"prompt {index}, {description}" for description in bad]
    if invalid:
        logger.debug("win_rate: %d values are not verdicts (counted as failures), e.g. %s", len(invalid), invalid[0])
    return cells, invalid


def win_rate_verdict(
    policy_first: Sequence[Any],
    policy_second: Sequence[Any],
    *,
    threshold: float = 0.5,
    max_failure_rate: float = 0.1,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """The ``win_rate`` check's decision from a judge's verdicts in both orders
    (see the module and :func:`decide_win_rate`).

    Returns ``passed``, ``reasons``, the counts ``n`` (usable prompts), ``wins``, ``ties``,
    ``disagreements``, ``losses``, ``failures``, ``invalid_verdicts`` (values that were not verdicts,
    with ``invalid_examples``); ``win_rate`` = (wins + ½·(ties + disagreements))/n with its interval
    ``low``, ``high`` (failures left out), ``tie_rate``, ``disagreement_rate``, ``failure_rate``,
    ``p_value`` (two-sided sign test, failures left out); the decision's ``conservative_win_rate``,
    ``conservative_low``, ``conservative_high``, ``conservative_p_value`` (failures as losses); and
    ``position_bias``: the share of the judge's 0/1 verdicts that pick the answer shown first (½
    unbiased), with ``position_bias_p_value``: two-sided sign test of the prompts favouring the first
    shown against those favouring the second (under no bias both are equally likely, McNemar 1947).
    """
    _check_settings(threshold, confidence, max_failure_rate=max_failure_rate)
    cells, invalid = _read_cells(policy_first, policy_second)
    t = Tally.from_cells(np.bincount(np.asarray(cells, dtype=int), minlength=CELLS))
    d = decide_win_rate(
        t.wins,
        t.ties + t.disagreements,
        t.losses,
        t.failures,
        threshold=threshold,
        max_failure_rate=max_failure_rate,
        confidence=confidence,
    )
    conditions = {key: bool(d.pop(key)) for key in CONDITIONS}
    out: dict[str, Any] = {"passed": bool(d.pop("passed"))}
    out |= {key: int(getattr(t, key)) for key in ("wins", "ties", "disagreements", "losses", "failures")}
    n = out["n"] = out["wins"] + out["ties"] + out["disagreements"] + out["losses"]
    out |= {key: float(value) for key, value in d.items()} | {
        "tie_rate": out["ties"] / n if n else math.nan,
        "disagreement_rate": out["disagreements"] / n if n else math.nan,
        "failure_rate": out["failures"] / len(cells) if cells else math.nan,
        "invalid_verdicts": len(invalid),
        "invalid_examples": invalid[:EXAMPLES_KEPT],
        "position_bias": int(t.first_picks) / int(t.strict_picks) if t.strict_picks else math.nan,
        "position_bias_p_value": float(sign_test(t.first_favoured, t.second_favoured)),
    }
    out["reasons"] = _win_rate_reasons(out | conditions, threshold, max_failure_rate, confidence)
    return out


#: Fewer finite held-out pairs than this and the reward-margin verdict cannot pass: below it the margin
#: interval's coverage is not established (measured ≥ 0.93 from n = 20 for normal and t3 margins).
MIN_PAIRS = 20


def _margin_reasons(
    d: dict[str, Any], total: int, threshold: float, max_nonfinite_rate: float, confidence: float
) -> list[str]:
    """Why the reward-margin verdict did not pass, one sentence per failed condition of :func:`margin_verdict`."""
    reasons = []
    if d["nonfinite"] > max_nonfinite_rate * total:
        reasons.append(f"{d['nonfinite']} of {total} margins are not finite (max {max_nonfinite_rate:.0%})")
    if d["n"] < MIN_PAIRS:
        return reasons + [f"only {d['n']} pairs with a finite margin; the check needs at least {MIN_PAIRS} to pass"]
    if not d["low"] > threshold:
        reasons.append(f"the accuracy interval's lower bound {d['low']:.3f} does not exceed {threshold}")
    if not d["accuracy_p_value"] < (1 - confidence) / 2:
        reasons.append(
            f"the binomial test of the accuracy above {threshold} is not significant "
            f"(one-sided p = {d['accuracy_p_value']:.3g})"
        )
    if not d["margin_low"] > 0:
        reasons.append(f"the margin interval's lower bound {d['margin_low']:.3f} is not above 0")
    return reasons


def margin_verdict(
    chosen_rewards: Sequence[float],
    rejected_rewards: Sequence[float],
    *,
    threshold: float = 0.5,
    confidence: float = 0.95,
    max_nonfinite_rate: float = 0.1,
    seed: int = 0,
) -> dict[str, Any]:
    """The ``reward_margin`` check's decision from held-out implicit rewards r = β·log π/π_ref of each pair.

    Margins r_w − r_l that are not finite are counted (``nonfinite``) and left out. On the n finite
    ones: ``accuracy`` = share of strict wins r_w > r_l with its Wilson interval ``low``, ``high`` and
    ``accuracy_p_value`` (exact binomial test of accuracy > threshold); ``margin_mean`` with
    ``margin_low``, ``margin_high`` from :func:`~.statistics.mean_interval` (bootstrap ``seed``);
    ``chosen_reward_mean``, ``rejected_reward_mean``. Passes when n ≥ :data:`MIN_PAIRS`, at most
    ``max_nonfinite_rate`` of the margins are not finite, the accuracy's lower bound exceeds
    ``threshold`` and its test is significant at (1 − confidence)/2, and ``margin_low`` > 0.
    """
    chosen, rejected = np.asarray(chosen_rewards, dtype=float), np.asarray(rejected_rewards, dtype=float)
    if chosen.shape != rejected.shape or chosen.ndim != 1:
        raise ValueError(
            f"Need one chosen and one rejected reward per pair; got shapes {chosen.shape} and {rejected.shape}."
        )
    _check_settings(threshold, confidence, max_nonfinite_rate=max_nonfinite_rate)
    margins = chosen - rejected
    finite = np.isfinite(margins)
    kept = margins[finite]
    n, correct = int(kept.size), int((kept > 0).sum())
    low, high = wilson_interval(correct, n, confidence)
    margin_low, margin_high = mean_interval(kept, confidence, seed=seed)
    out: dict[str, Any] = {
        "n": n,
        "nonfinite": int((~finite).sum()),
        "accuracy": correct / n if n else math.nan,
        "low": low,
        "high": high,
        "accuracy_p_value": float(stats.binomtest(correct, n, threshold, alternative="greater").pvalue) if n else 1.0,
        "margin_mean": float(kept.mean()) if n else math.nan,
        "margin_low": float(margin_low),
        "margin_high": float(margin_high),
        "chosen_reward_mean": float(chosen[finite].mean()) if n else math.nan,
        "rejected_reward_mean": float(rejected[finite].mean()) if n else math.nan,
    }
    reasons = _margin_reasons(out, margins.size, threshold, max_nonfinite_rate, confidence)
    return {"passed": not reasons, **out, "reasons": reasons}
