"""Reward margin of a DPO policy on held-out preference pairs (an `evaluate` metric)."""

import datasets
import evaluate

from dpo_plugin.evaluation.verdicts import margin_verdict

_DESCRIPTION = """
Given each held-out pair's implicit rewards r = β·log π/π_ref of the chosen and the rejected answer,
returns the verdict of the reward_margin check, `dpo_plugin.evaluation.margin_verdict`: passed,
reasons, n (pairs with a finite margin; the others are counted in `nonfinite` and left out), the
preference accuracy (strict r_w > r_l; ties are not wins) with a Wilson interval `low`, `high` and
an exact binomial test, the mean margin r_w − r_l with `margin_low`, `margin_high` (the union of the
Student-t and the studentized-bootstrap intervals) and the mean chosen and rejected rewards (a
falling chosen reward is DPO's known failure).
"""

_KWARGS = """
Args:
    chosen_rewards (list of float): implicit reward of each chosen answer.
    rejected_rewards (list of float): implicit reward of each rejected answer.
    threshold (float): the accuracy's lower bound must exceed it, default 0.5.
    confidence (float): interval level, default 0.95.
    max_nonfinite_rate (float): the largest share of non-finite margins, default 0.1.
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

    def _compute(
        self, chosen_rewards, rejected_rewards, threshold=0.5, confidence=0.95, max_nonfinite_rate=0.1, seed=0
    ):
        return margin_verdict(
            chosen_rewards,
            rejected_rewards,
            threshold=threshold,
            confidence=confidence,
            max_nonfinite_rate=max_nonfinite_rate,
            seed=seed,
        )
