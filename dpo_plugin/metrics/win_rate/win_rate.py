"""Win rate of a policy against its reference from a judge asked in both orders (an `evaluate` metric)."""

import math

import datasets
import evaluate

from dpo_plugin.evaluation.statistics import score_win_rate

_DESCRIPTION = """
Per prompt, a judge compared the policy's and the reference's answers twice: policy_first is its
verdict with the policy shown first, policy_second with the policy shown second (0: first better,
1: second better, 0.5: tie, NaN: judge failure). Agreement is a win or a loss, disagreement or a
tie counts ½, failures are excluded (and counted). Returns wins, losses, ties, failures, n, the
win rate, the tie rate, a Wilson 95% interval and a two-sided sign-test p-value.
"""

_KWARGS = """
Args:
    policy_first (list of float): verdicts with the policy as the first answer (NaN: failure).
    policy_second (list of float): verdicts with the policy as the second answer (NaN: failure).
    confidence (float): interval level, default 0.95.
"""


def _verdict(value):
    return None if value is None or math.isnan(value) else value


class WinRate(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Wilson 1927, Probable inference, the law of succession, and statistical inference",
            inputs_description=_KWARGS,
            features=datasets.Features({"policy_first": datasets.Value("float64"), "policy_second": datasets.Value("float64")}),
        )

    def _compute(self, policy_first, policy_second, confidence=0.95):
        stats = score_win_rate([_verdict(v) for v in policy_first], [_verdict(v) for v in policy_second], confidence)
        return stats.to_dict()
