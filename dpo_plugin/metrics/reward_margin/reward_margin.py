"""Reward margin of a DPO policy on held-out preference pairs (an `evaluate` metric)."""

import datasets
import evaluate

from dpo_plugin.evaluation.statistics import margin_statistics

_DESCRIPTION = """
Given each held-out pair's implicit rewards r = β·log π/π_ref of the chosen and the rejected answer,
returns the mean margin r_w − r_l with a BCa bootstrap 95% interval, the preference accuracy
(strict r_w > r_l; ties are not wins) with a Wilson 95% interval, the mean chosen and rejected
rewards (a falling chosen reward is DPO's known failure) and n.
"""

_KWARGS = """
Args:
    chosen_rewards (list of float): implicit reward of each chosen answer.
    rejected_rewards (list of float): implicit reward of each rejected answer.
    confidence (float): interval level, default 0.95.
    seed (int): bootstrap seed, default 0.
"""


class RewardMargin(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Rafailov et al. 2023, Direct Preference Optimization, arXiv:2305.18290",
            inputs_description=_KWARGS,
            features=datasets.Features(
                {"chosen_rewards": datasets.Value("float64"), "rejected_rewards": datasets.Value("float64")}
            ),
        )

    def _compute(self, chosen_rewards, rejected_rewards, confidence=0.95, seed=0):
        return margin_statistics(chosen_rewards, rejected_rewards, confidence=confidence, seed=seed)
