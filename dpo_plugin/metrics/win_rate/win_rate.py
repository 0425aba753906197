"""Win rate of a policy against its reference from a judge asked in both orders (an `evaluate` metric)."""

import datasets
import evaluate

from dpo_plugin.evaluation.statistics import score_win_rate

_DESCRIPTION = """
Per prompt, a judge compared the policy's and the reference's answers twice: policy_first is its
verdict with the policy shown first, policy_second with the policy shown second (0: first better,
1: second better, 0.5: tie; None or NaN: judge failure). The policy wins a prompt when the judge
prefers it in both orders and loses when it prefers the reference in both; a tie or a disagreement
counts ½; a failure in either order leaves the prompt out (counted in `failures`, never a win).
Returns wins, losses, ties, failures, n, the win rate (wins + ½·ties)/n, the tie rate, a Wilson
interval on (wins + ½·ties) of n and a two-sided sign-test p-value on the untied prompts.
"""

_KWARGS = """
Args:
    policy_first (list of float): verdicts with the policy as the first answer (None or NaN: failure).
    policy_second (list of float): verdicts with the policy as the second answer (None or NaN: failure).
    confidence (float): interval level, default 0.95.
"""


class WinRate(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Wilson 1927, Probable inference, the law of succession, and statistical inference",
            inputs_description=_KWARGS,
            features=datasets.Features(
                {"policy_first": datasets.Value("float64"), "policy_second": datasets.Value("float64")}
            ),
        )

    def _compute(self, policy_first, policy_second, confidence=0.95):
        return score_win_rate(policy_first, policy_second, confidence).to_dict()
