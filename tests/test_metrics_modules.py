"""The `evaluate` metric modules load offline from their folders and compute the checks' statistics."""

from __future__ import annotations

import math

import evaluate
import pytest
from scipy import stats

from dpo_plugin.evaluation import margin_verdict, win_rate_verdict
from dpo_plugin.metrics import metric_path


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")


def test_reward_margin_module():
    metric = evaluate.load(metric_path("reward_margin"))
    chosen, rejected = [0.3, 0.1, -0.2, 0.4, 0.0, math.nan], [0.1, 0.2, -0.5, -0.1, 0.0, 0.0]
    out = metric.compute(chosen_rewards=chosen, rejected_rewards=rejected)
    # margins 0.2, −0.1, 0.3, 0.5, 0.0 (and one NaN, left out) → mean 0.18; wins 3 of 5 (the zero margin is not a win)
    assert out == margin_verdict(chosen, rejected)
    assert out["n"] == 5 and out["nonfinite"] == 1 and out["margin_mean"] == pytest.approx(0.18)
    assert out["accuracy"] == pytest.approx(0.6)
    wilson = stats.binomtest(3, 5).proportion_ci(method="wilson")
    assert (out["low"], out["high"]) == pytest.approx((wilson.low, wilson.high))
    assert out["chosen_reward_mean"] == pytest.approx(0.12) and out["rejected_reward_mean"] == pytest.approx(-0.06)
    assert out["passed"] is False  # 5 pairs are fewer than the 20 the check needs, and one margin of 6 is NaN
    wider = metric.compute(chosen_rewards=chosen, rejected_rewards=rejected, confidence=0.99, seed=1)
    assert wider["margin_low"] < out["margin_low"] and wider["low"] < out["low"]


def test_win_rate_module_reads_verdicts_before_arrow_stores_them():
    metric = evaluate.load(metric_path("win_rate"))
    first, second = [0, 0, 1, 0.5, math.nan, None, 0], [1, 1, 0, 0.5, 1, 1, 0]
    out = metric.compute(policy_first=first, policy_second=second)
    # win, win, loss, tie, failure, failure, disagreement → score (2 + ½·2) of 5
    assert out == win_rate_verdict(first, second)
    assert (out["wins"], out["losses"], out["ties"], out["disagreements"], out["failures"], out["n"]) == (
        2,
        1,
        1,
        1,
        2,
        5,
    )
    assert out["win_rate"] == pytest.approx(3 / 5) and out["invalid_verdicts"] == 0
    assert out["p_value"] == pytest.approx(stats.binomtest(2, 3).pvalue)
    # a float64 column would have made these 2 wins; they are not verdicts
    booleans = metric.compute(policy_first=[False] * 2, policy_second=[True] * 2)
    assert (booleans["wins"], booleans["failures"], booleans["invalid_verdicts"]) == (0, 2, 4)
    strings = metric.compute(policy_first=["0", "0"], policy_second=["1", "1"])
    assert strings["wins"] == 0 and strings["invalid_examples"][0] == "prompt 0, policy first: '0' (str)"


def test_win_rate_module_add_and_add_batch_read_verdicts_too():
    metric = evaluate.load(metric_path("win_rate"))
    metric.add_batch(policy_first=[0, True], policy_second=[1, 1])
    metric.add(policy_first="0", policy_second=1)
    out = metric.compute(threshold=0.6)
    assert (out["wins"], out["failures"], out["invalid_verdicts"]) == (1, 2, 2)
    none = metric.compute(policy_first=[None, None], policy_second=[0, 1])
    assert (
        none["n"] == 0
        and none["failures"] == 2
        and math.isnan(none["win_rate"])
        and (none["low"], none["high"]) == (0.0, 1.0)
    )
