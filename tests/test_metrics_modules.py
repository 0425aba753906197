"""The `evaluate` metric modules load offline from their folders and compute the checks' statistics."""

from __future__ import annotations

import math

import evaluate
import pytest
from scipy import stats

from dpo_plugin.evaluation.statistics import bootstrap_interval
from dpo_plugin.metrics import metric_path


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")


def test_reward_margin_module():
    metric = evaluate.load(metric_path("reward_margin"))
    chosen, rejected = [0.3, 0.1, -0.2, 0.4, 0.0], [0.1, 0.2, -0.5, -0.1, 0.0]
    out = metric.compute(chosen_rewards=chosen, rejected_rewards=rejected)
    # margins 0.2, −0.1, 0.3, 0.5, 0.0 → mean 0.18; wins 3 of 5 (the zero margin is not a win)
    assert set(out) == {
        "n",
        "margin_mean",
        "margin_interval",
        "accuracy",
        "accuracy_interval",
        "chosen_reward_mean",
        "rejected_reward_mean",
    }
    assert out["n"] == 5 and out["margin_mean"] == pytest.approx(0.18) and out["accuracy"] == pytest.approx(0.6)
    wilson = stats.binomtest(3, 5).proportion_ci(method="wilson")
    assert out["accuracy_interval"] == pytest.approx([wilson.low, wilson.high])
    assert out["chosen_reward_mean"] == pytest.approx(0.12) and out["rejected_reward_mean"] == pytest.approx(-0.06)
    low, high = out["margin_interval"]
    assert -0.1 <= low < 0.18 < high <= 0.5  # inside the range of the margins
    assert out["margin_interval"] == pytest.approx(list(bootstrap_interval([c - r for c, r in zip(chosen, rejected)])))
    wider = metric.compute(chosen_rewards=chosen, rejected_rewards=rejected, confidence=0.99, seed=1)
    assert wider["margin_interval"][0] <= low and wider["accuracy_interval"][0] < out["accuracy_interval"][0]


def test_win_rate_module_takes_none_or_nan_for_failures():
    metric = evaluate.load(metric_path("win_rate"))
    out = metric.compute(policy_first=[0, 0, 1, 0.5, math.nan, None], policy_second=[1, 1, 0, 0.5, 1, 1])
    # win, win, loss, tie, failure, failure → score 2.5 of 4
    assert (out["wins"], out["losses"], out["ties"], out["failures"], out["n"]) == (2, 1, 1, 2, 4)
    assert out["win_rate"] == pytest.approx(2.5 / 4) and out["tie_rate"] == pytest.approx(0.25)
    z = stats.norm.ppf(0.975)  # Wilson for 2.5 of 4, written out
    p, n = 2.5 / 4, 4
    centre, half = (
        (p + z**2 / (2 * n)) / (1 + z**2 / n),
        z / (1 + z**2 / n) * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)),
    )
    assert out["interval"] == pytest.approx([centre - half, centre + half])
    assert out["p_value"] == pytest.approx(stats.binomtest(2, 3).pvalue)


def test_win_rate_module_position_bias_and_no_prompts():
    metric = evaluate.load(metric_path("win_rate"))
    biased = metric.compute(policy_first=[0.0] * 10, policy_second=[0.0] * 10)
    assert biased["win_rate"] == 0.5 and biased["ties"] == 10 and biased["p_value"] == 1.0
    none = metric.compute(policy_first=[None, None], policy_second=[0, 1])
    assert none["n"] == 0 and none["failures"] == 2 and math.isnan(none["win_rate"]) and none["interval"] == [0.0, 1.0]
