"""The `evaluate` metric modules load offline from their folders and compute the checks' statistics."""

from __future__ import annotations

import math

import evaluate
import pytest

from dpo_plugin.evaluation.statistics import wilson_interval
from dpo_plugin.metrics import metric_path


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")


def test_reward_margin_module():
    metric = evaluate.load(metric_path("reward_margin"))
    out = metric.compute(chosen_rewards=[0.3, 0.1, -0.2, 0.4, 0.0], rejected_rewards=[0.1, 0.2, -0.5, -0.1, 0.0])
    # margins 0.2, −0.1, 0.3, 0.5, 0.0 → mean 0.18; wins 3 of 5 (the zero margin is not a win)
    assert out["n"] == 5 and out["margin_mean"] == pytest.approx(0.18) and out["accuracy"] == pytest.approx(0.6)
    assert out["accuracy_interval"] == pytest.approx(list(wilson_interval(3, 5)))
    low, high = out["margin_interval"]
    assert low < 0.18 < high
    assert out["chosen_reward_mean"] == pytest.approx(0.12) and out["rejected_reward_mean"] == pytest.approx(-0.06)


def test_win_rate_module():
    metric = evaluate.load(metric_path("win_rate"))
    out = metric.compute(policy_first=[0, 0, 1, 0.5, math.nan], policy_second=[1, 1, 0, 0.5, 1])
    assert (out["wins"], out["losses"], out["ties"], out["failures"], out["n"]) == (2, 1, 1, 1, 4)
    assert out["win_rate"] == pytest.approx(2.5 / 4) and out["interval"] == pytest.approx(list(wilson_interval(2.5, 4)))
