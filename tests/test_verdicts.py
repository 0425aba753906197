"""The checks' decisions as pure functions: win_rate_verdict and margin_verdict, against hand counts and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from dpo_plugin.evaluation import margin_verdict, win_rate_verdict
from dpo_plugin.evaluation.statistics import mean_interval, score_interval
from dpo_plugin.evaluation.verdicts import MIN_PAIRS, prompt_outcome


@pytest.mark.parametrize(
    "first, second, outcome",
    [
        (0, 1, "win"),
        (1, 0, "loss"),
        (0.5, 0.5, "tie"),
        (0, 0, "disagreement"),
        (1, 1, "disagreement"),
        (0.5, 1, "disagreement"),
        (0, 0.5, "disagreement"),
        (None, 1, "failure"),
        (0, None, "failure"),
        (math.nan, 1, "failure"),
        (True, 1, "failure"),
        (0, False, "failure"),
        (2, 1, "failure"),
        ("0", "1", "failure"),
        (np.float64(0.0), np.int64(1), "win"),
        (np.float32(0.5), 0.5, "tie"),
    ],
)
def test_prompt_outcome(first, second, outcome):
    assert prompt_outcome(first, second) == outcome


def test_win_rate_verdict_counts_by_hand():
    # win, win, loss, tie, disagreement (tie in one order), disagreement (position), failure, failure, invalid
    first = [0, 0, 1, 0.5, 0.5, 0, None, 0, "0"]
    second = [1, 1, 0, 0.5, 1, 0, 1, math.nan, 1]
    v = win_rate_verdict(first, second)
    assert (v["wins"], v["ties"], v["disagreements"], v["losses"], v["failures"], v["n"]) == (2, 1, 2, 1, 3, 6)
    assert v["invalid_verdicts"] == 1 and v["invalid_examples"] == ["prompt 8, policy first: '0' (str)"]
    assert v["win_rate"] == pytest.approx((2 + 0.5 * 3) / 6)
    assert (v["tie_rate"], v["disagreement_rate"], v["failure_rate"]) == pytest.approx((1 / 6, 2 / 6, 3 / 9))
    assert (v["low"], v["high"]) == pytest.approx(score_interval(2, 3, 1))
    assert v["conservative_win_rate"] == pytest.approx(3.5 / 9)
    assert (v["conservative_low"], v["conservative_high"]) == pytest.approx(score_interval(2, 3, 4))
    assert v["p_value"] == pytest.approx(stats.binomtest(2, 3).pvalue)
    assert v["conservative_p_value"] == pytest.approx(stats.binomtest(2, 6, alternative="greater").pvalue)
    # picks of a side (0 or 1) in the six usable prompts: 0,1 | 0,1 | 1,0 | - | 1 | 0,0 → 5 of 9 pick the first shown
    assert v["position_bias"] == pytest.approx(5 / 9)
    # prompts favouring the first shown: (0, 0); the second: (0.5, 1) → 1 against 1
    assert v["position_bias_p_value"] == 1.0
    assert v["passed"] is False and any("failed on 33% of prompts" in r for r in v["reasons"])


def test_booleans_and_strings_are_failures_never_wins():
    v = win_rate_verdict([False] * 2, [True] * 2)
    assert (v["wins"], v["failures"], v["invalid_verdicts"]) == (0, 2, 4) and v["passed"] is False
    assert v["invalid_examples"][:2] == ["prompt 0, policy first: False (bool)", "prompt 0, policy second: True (bool)"]
    strings = win_rate_verdict(["0"] * 3, ["1"] * 3)
    assert strings["wins"] == 0 and strings["failures"] == 3
    assert win_rate_verdict([None, math.nan], [1, 1])["invalid_verdicts"] == 0  # declared failures, not invalid


@pytest.mark.parametrize("preferred", [0, 1])
def test_a_purely_position_biased_judge_cannot_pass_and_is_flagged(preferred):
    n = 30  # the judge always picks the answer shown first (0), or always the second (1)
    v = win_rate_verdict([preferred] * n, [preferred] * n)
    assert v["win_rate"] == 0.5 and v["disagreements"] == n and v["wins"] == v["losses"] == v["ties"] == 0
    assert v["disagreement_rate"] == 1.0 and v["tie_rate"] == 0.0
    assert v["position_bias"] == 1 - preferred
    assert v["position_bias_p_value"] == pytest.approx(2 / 2**n)  # all 30 prompts favour one side
    assert v["passed"] is False and v["low"] < 0.5


def test_all_wins_and_all_losses_have_exact_endpoints():
    won = win_rate_verdict([0] * 20, [1] * 20)
    assert won["passed"] is True and won["high"] == 1.0 and won["reasons"] == []
    assert won["conservative_p_value"] == pytest.approx(2.0**-20)
    lost = win_rate_verdict([1] * 7, [0] * 7, threshold=0.0)
    assert lost["low"] == 0.0 and lost["passed"] is False  # threshold 0 is not passed by losing every prompt


def test_few_prompts_cannot_pass_on_the_sign_test():
    # 5 of 5 wins: one-sided p = 1/32 > 0.025; 6 of 6: 1/64
    five = win_rate_verdict([0] * 5, [1] * 5)
    assert five["passed"] is False and "not significant" in " ".join(five["reasons"])
    assert win_rate_verdict([0] * 6, [1] * 6)["passed"] is True


def test_failures_count_as_losses_for_the_decision():
    # 56 wins, 34 losses, 10 failures (10%, the allowed maximum): without the failures 56 vs 34 is significant
    first = [0] * 56 + [1] * 34 + [None] * 10
    second = [1] * 56 + [0] * 34 + [1] * 10
    v = win_rate_verdict(first, second)
    assert stats.binomtest(56, 90, alternative="greater").pvalue < 0.025  # the estimate without failures would pass
    assert v["conservative_p_value"] == pytest.approx(stats.binomtest(56, 100, alternative="greater").pvalue)
    assert v["conservative_p_value"] > 0.025 and v["passed"] is False
    assert v["win_rate"] == pytest.approx(56 / 90) and v["conservative_win_rate"] == pytest.approx(0.56)
    assert any(r.startswith("with the 10 judge failures counted as losses, the sign test") for r in v["reasons"])
    assert not any("failed on" in r for r in v["reasons"])  # 10% is allowed
    assert (
        win_rate_verdict(first, second, max_failure_rate=0.05)["reasons"][0]
        == "the judge failed on 10% of prompts (max 5%)"
    )


def test_a_threshold_above_one_half_needs_the_lower_bound():
    first, second = [0] * 30 + [1] * 10, [1] * 30 + [0] * 10  # 30 of 40: significant, low ≈ 0.59
    low = score_interval(30, 0, 10)[0]
    assert 0.55 < low < 0.65
    assert win_rate_verdict(first, second, threshold=0.55)["passed"] is True
    v = win_rate_verdict(first, second, threshold=0.65)
    p_value = stats.binom.sf(29, 40, 0.65)  # P(Bin(40, 0.65) >= 30): the score test at 0.65
    assert v["conservative_p_value"] == pytest.approx(p_value) and p_value > 0.025
    assert v["passed"] is False and v["reasons"] == [
        f"the interval's lower bound {low:.3f} does not exceed the threshold 0.65",
        f"the test of the score above 0.65 is not significant (one-sided p = {p_value:.3g}, needs < 0.025)",
    ]


def test_win_rate_verdict_without_usable_prompts_and_bad_input():
    for first, second in [([None, "A"], [1, 0]), ([], [])]:
        v = win_rate_verdict(first, second)
        assert v["n"] == 0 and math.isnan(v["win_rate"]) and (v["low"], v["high"]) == (0.0, 1.0)
        assert v["passed"] is False and v["reasons"][0] == "no usable prompts (every judgement failed)"
    assert win_rate_verdict([None], [1])["reasons"][1] == "the judge failed on 100% of prompts (max 10%)"
    assert len(win_rate_verdict([], [])["reasons"]) == 1
    with pytest.raises(ValueError, match="verdicts"):
        win_rate_verdict([0, 1], [1])
    for settings in ({"threshold": 1.0}, {"max_failure_rate": -0.1}, {"confidence": 1.0}):
        with pytest.raises(ValueError):
            win_rate_verdict([0], [1], **settings)


def _margins(n: int, shift: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(shift, 1.0, n), rng.normal(0.0, 1.0, n)


def test_margin_verdict_by_hand():
    chosen, rejected = _margins(30, shift=2.0)
    chosen[[3, 7]] = [math.nan, math.inf]
    v = margin_verdict(chosen, rejected)
    kept = (chosen - rejected)[[i for i in range(30) if i not in (3, 7)]]
    correct = int((kept > 0).sum())
    assert v["n"] == 28 and v["nonfinite"] == 2
    assert v["accuracy"] == pytest.approx(correct / 28)
    wilson = stats.binomtest(correct, 28).proportion_ci(method="wilson")
    assert (v["low"], v["high"]) == pytest.approx((wilson.low, wilson.high))
    assert v["accuracy_p_value"] == pytest.approx(stats.binomtest(correct, 28, 0.5, alternative="greater").pvalue)
    assert v["margin_mean"] == pytest.approx(kept.mean())
    assert (v["margin_low"], v["margin_high"]) == pytest.approx(mean_interval(kept))
    finite = np.isfinite(chosen - rejected)
    assert v["chosen_reward_mean"] == pytest.approx(chosen[finite].mean())
    assert v["rejected_reward_mean"] == pytest.approx(rejected[finite].mean())
    assert v["passed"] is True and v["reasons"] == []  # 2 of 30 non-finite is under 10%


def test_margin_verdict_needs_enough_pairs():
    assert MIN_PAIRS == 20
    few = margin_verdict([1.0] * 4, [0.0] * 4)  # main passed 4 identical positive margins
    assert few["passed"] is False and few["reasons"] == [
        "only 4 pairs with a finite margin; the check needs at least 20 to pass"
    ]
    chosen, rejected = _margins(20, shift=2.0)
    assert margin_verdict(chosen, rejected)["passed"] is True
    assert margin_verdict(chosen[:19], rejected[:19])["passed"] is False


def test_margin_verdict_fails_on_too_many_nonfinite_margins():
    chosen, rejected = _margins(40, shift=2.0)
    chosen[:5] = math.nan  # 12.5% > 10%
    v = margin_verdict(chosen, rejected)
    assert v["nonfinite"] == 5 and v["n"] == 35 and v["passed"] is False
    assert v["reasons"] == ["5 of 40 margins are not finite (max 10%)"]
    assert margin_verdict(chosen, rejected, max_nonfinite_rate=0.2)["passed"] is True


def test_margin_verdict_failing_conditions_and_edges():
    chosen, rejected = _margins(40, shift=0.0)
    v = margin_verdict(chosen, rejected)
    assert v["passed"] is False and len(v["reasons"]) == 3  # accuracy bound, its test, margin bound
    empty = margin_verdict([], [])
    assert empty["n"] == 0 and math.isnan(empty["accuracy"]) and (empty["low"], empty["high"]) == (0.0, 1.0)
    assert empty["passed"] is False
    with pytest.raises(ValueError, match="one chosen and one rejected"):
        margin_verdict([1.0, 2.0], [1.0])
    with pytest.raises(ValueError):
        margin_verdict([1.0], [0.0], threshold=-0.1)
