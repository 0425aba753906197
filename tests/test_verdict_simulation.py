"""The verdicts on simulated judges and margins of known behaviour: coverage, false passes, failures, position bias.

Exact sums over every outcome of n prompts where the judge never fails; seeded simulations otherwise.
Each runs the checks' own code (``decide_win_rate``, ``score_interval``, ``Tally``, ``mean_interval``,
``win_rate_verdict``). ``benchmarks/simulate_verdicts.py`` is the long version with the tables.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from dpo_plugin.evaluation import margin_verdict, win_rate_verdict
from dpo_plugin.evaluation.simulation import (
    KINDS,
    cell_probabilities,
    expected_score,
    judge_cells,
    outcome_probabilities,
    outcomes,
    prefer_for_score,
    simulate_tally,
)
from dpo_plugin.evaluation.statistics import mean_interval, score_interval, sign_test
from dpo_plugin.evaluation.verdicts import FAILURE_CELL, VERDICT_ORDER, decide_win_rate

SETTINGS = {"threshold": 0.5, "max_failure_rate": 0.1, "confidence": 0.95}
Z = 1.959963984540054


def _judges(scores):
    """(kind, tie) → (cell probabilities, true scores) at the reachable ``scores``,
    for every judge kind and tie level."""
    ties = {"position": (0.0, 0.3)}
    return {(kind, tie): judge_cells(kind, tie, scores) for kind in KINDS for tie in ties.get(kind, (0.0, 0.3, 0.87))}


def test_the_judge_kinds_are_what_they_say():
    consistent = cell_probabilities("consistent", 0.6, 0.1)
    assert consistent[[2, 4, 6]] == pytest.approx([0.6, 0.1, 0.3]) and consistent.sum() == pytest.approx(1)
    assert expected_score(consistent) == pytest.approx(0.6 + 0.05)
    independent = cell_probabilities("independent", 0.6, 0.1)  # each order alone: 0.6 / 0.1 / 0.3
    assert independent[2] == pytest.approx(0.6 * 0.6) and independent[0] == pytest.approx(0.6 * 0.3)
    biased = cell_probabilities("position", 0.45, 0.1, first_bias=0.6)  # no preference: 80% first picks
    first = sum(
        biased[3 * i + j] * ((a == 0) + (b == 0))
        for i, a in enumerate(VERDICT_ORDER)
        for j, b in enumerate(VERDICT_ORDER)
    )
    strict = sum(
        biased[3 * i + j] * ((a != 0.5) + (b != 0.5))
        for i, a in enumerate(VERDICT_ORDER)
        for j, b in enumerate(VERDICT_ORDER)
    )
    assert first / strict == pytest.approx((0.6 + 0.4 * 0.45) / (0.6 + 0.4 * 0.9))
    assert expected_score(biased) == pytest.approx(0.5)
    failing = cell_probabilities("consistent", 0.5, failures=0.1)
    assert failing[6] == pytest.approx(0.4) and failing[FAILURE_CELL] == pytest.approx(0.1)
    assert prefer_for_score("independent", 0.7) == pytest.approx(0.7)  # no ties: μ = ½ + (p² − q²)/2 = p


def test_exact_outcome_probabilities_match_a_simulation():
    cells = cell_probabilities("correlated", 0.5, 0.2)
    wins, halves, losses = outcomes(12)
    assert len(wins) == 13 * 14 // 2 and np.all(wins + halves + losses == 12)
    exact = outcome_probabilities(12, cells)
    t = simulate_tally(12, cells, 40000, np.random.default_rng(0))
    simulated = np.mean((t.wins == 3) & (t.ties + t.disagreements == 5))
    assert simulated == pytest.approx(exact[(wins == 3) & (halves == 5)][0], abs=0.004)


def test_coverage_of_the_win_rate_interval_for_every_judge_and_n():
    scores = np.round(np.arange(0.02, 0.99, 0.04), 2)  # 0.02, 0.06, …, 0.5, …, 0.98
    judges = {judge: at for judge, at in _judges(scores).items() if at[1].size}
    assert len(judges) == 11
    for n in (10, 14, 16, 20, 25, 31, 40, 100):
        wins, halves, losses = outcomes(n)
        low, high = score_interval(wins, halves, losses)
        for (kind, tie), (cells, mu) in judges.items():
            covered = (low[:, None] <= mu + 1e-12) & (mu - 1e-12 <= high[:, None])
            coverage = (outcome_probabilities(n, cells) * covered).sum(axis=0)
            assert coverage.min() >= 0.93, (kind, tie, n, mu[coverage.argmin()], coverage.min())


def test_the_interval_is_narrower_than_wilson_where_ties_occur():
    n = 40
    wins, halves, losses = outcomes(n)
    low, high = score_interval(wins, halves, losses)
    p = (wins + halves / 2) / n  # main's interval: Wilson on wins + ½·ties
    wilson = 2 * Z / (1 + Z**2 / n) * np.sqrt(p * (1 - p) / n + Z**2 / (4 * n**2))
    for kind, tie, score in [
        ("consistent", 0.3, 0.6),
        ("consistent", 0.87, 0.55),
        ("independent", 0.3, 0.6),
        ("correlated", 0.3, 0.6),
    ]:
        pmf = outcome_probabilities(n, cell_probabilities(kind, prefer_for_score(kind, score, tie), tie))
        assert (high - low) @ pmf < 0.95 * (wilson @ pmf), (kind, tie)


def _pass_rate(n: int, cells: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    wins, halves, losses = outcomes(n)
    passed = decide_win_rate(wins, halves, losses, np.zeros_like(wins), **(SETTINGS | {"threshold": threshold}))[
        "passed"
    ]
    return passed @ outcome_probabilities(n, cells)


def test_false_passes_at_most_2_5_percent_at_every_n():
    # the worst case of main's rule: a consistent judge without ties at a true score of 0.5 (3.9% at n = 21)
    consistent = cell_probabilities("consistent", 0.5)
    rates = np.array([_pass_rate(n, consistent) for n in range(5, 201)])
    assert rates.max() <= 0.025 and rates[21 - 5] < 0.02
    judges = _judges([0.5])
    for n in (10, 21, 40, 100, 300):
        for (kind, tie), (cells, _) in judges.items():
            assert _pass_rate(n, cells)[0] <= 0.025, (kind, tie, n)


@pytest.mark.parametrize("threshold", [0.4, 0.6, 0.7])
def test_false_passes_at_other_thresholds(threshold):
    """At a true score equal to a threshold other than ½, the score test keeps false passes at 2.5%."""
    judges = {judge: at for judge, at in _judges([threshold]).items() if at[1].size}
    assert len(judges) >= 6
    for n in (10, 21, 40, 85, 200):
        for (kind, tie), (cells, _) in judges.items():
            assert _pass_rate(n, cells, threshold)[0] <= 0.025, (kind, tie, n)


@pytest.mark.parametrize("threshold", [0.4, 0.6])
def test_false_passes_with_a_few_ties_at_other_thresholds(threshold):
    """A few ties make half scores; the score test rounds them down, so no n from 10 to 200 passes more than 2.5%."""
    for tie in (0.01, 0.02, 0.05):
        cells = judge_cells("consistent", tie, [threshold])[0]
        worst = max(_pass_rate(n, cells, threshold)[0] for n in range(10, 201))
        assert worst <= 0.025, (tie, worst)


def test_power_at_a_true_score_of_0_7():
    at = {
        kind: _pass_rate(40, cell_probabilities(kind, prefer_for_score(kind, 0.7)))
        for kind in ("consistent", "independent")
    }
    assert at["consistent"] == pytest.approx(0.703, abs=0.001) and at["independent"] == pytest.approx(0.927, abs=0.001)


@pytest.mark.parametrize("failures", [0.05, 0.1])
def test_a_judge_failing_on_would_be_losses_cannot_fake_a_pass(failures):
    rng = np.random.default_rng(13)
    cells = cell_probabilities("consistent", 0.5, failures=failures)  # the policy is no better than the reference
    for n in (40, 100, 400):
        t = simulate_tally(n, cells, 4000, rng)
        d = decide_win_rate(t.wins, t.ties + t.disagreements, t.losses, t.failures, **SETTINGS)
        assert np.nanmean(d["win_rate"]) > 0.5 + failures / 3  # the failures hide losses from the estimate…
        assert d["passed"].mean() <= 0.025 + 3 * math.sqrt(0.025 * 0.975 / 4000), n  # …but not from the decision


def test_the_position_bias_test_holds_its_level_and_finds_the_bias():
    rng = np.random.default_rng(7)
    for kind in ("independent", "correlated"):  # unbiased judges with disagreements: flagged at most 5% of runs
        t = simulate_tally(100, cell_probabilities(kind, prefer_for_score(kind, 0.6)), 4000, rng)
        assert np.mean(sign_test(t.first_favoured, t.second_favoured) < 0.05) <= 0.05 + 3 * math.sqrt(
            0.05 * 0.95 / 4000
        )
    biased = cell_probabilities("position", 0.5, first_bias=0.6)  # 80% first picks
    t = simulate_tally(40, biased, 4000, rng)
    assert np.mean(sign_test(t.first_favoured, t.second_favoured) < 0.05) > 0.99


def test_win_rate_verdict_on_a_simulated_position_biased_judge():
    rng = np.random.default_rng(3)
    n, bias, prefer = 200, 0.6, 0.75  # picks the first shown 60% of the time, else prefers the policy 75%

    def judge(policy_first: bool) -> list[float]:
        content = np.where(rng.random(n) < prefer, 0.0 if policy_first else 1.0, 1.0 if policy_first else 0.0)
        return list(np.where(rng.random(n) < bias, 0.0, content))

    v = win_rate_verdict(judge(True), judge(False))
    expected = bias + (1 - bias) / 2  # P(a pick is the first shown) = 0.8, whatever the preference
    assert v["position_bias"] == pytest.approx(expected, abs=0.04) and v["position_bias_p_value"] < 1e-6
    assert v["win_rate"] == pytest.approx(
        expected_score(cell_probabilities("position", prefer, first_bias=bias)), abs=0.05
    )
    assert v["win_rate"] < 0.68  # 0.6 expected, not 0.75: pulled toward 0.5, so the bias cannot fake a pass


@pytest.mark.parametrize("name, n", [("normal", 20), ("t3", 20), ("log-normal", 40)])
def test_coverage_of_the_mean_margin_interval(name, n):
    rng = np.random.default_rng(n)
    draw, mean = {
        "normal": (lambda size: rng.normal(0.3, 1.0, size), 0.3),
        "t3": (lambda size: rng.standard_t(3, size), 0.0),
        "log-normal": (lambda size: rng.lognormal(0.0, 1.0, size), math.exp(0.5)),
    }[name]
    low, high = mean_interval(draw((2000, n)))
    assert np.mean((low <= mean) & (mean <= high)) >= 0.93


def test_margin_verdict_false_passes():
    rng = np.random.default_rng(5)  # a policy no better than its reference: margins centred on 0
    passed = [margin_verdict(rng.normal(0, 1, 40), rng.normal(0, 1, 40))["passed"] for _ in range(400)]
    assert np.mean(passed) <= 0.025
