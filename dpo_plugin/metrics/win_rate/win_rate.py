"""Win rate of a policy against its reference from a judge asked in both orders (an `evaluate` metric)."""

import math

import datasets
import evaluate

from dpo_plugin.evaluation.judges.base import NotAVerdict, read_verdict
from dpo_plugin.evaluation.verdicts import win_rate_verdict

_DESCRIPTION = """
Per prompt, a judge compared the policy's and the reference's answers twice: policy_first is its
verdict with the policy shown first, policy_second with the policy shown second (0: first better,
1: second better, 0.5: tie; None or NaN: judge failure). Any other value (True, "1", 2, …) is not a
verdict: a failure, counted in `invalid_verdicts`. A prompt is a win when the judge prefers the
policy in both orders, a loss when it prefers the reference in both, a tie when both orders tie, a
disagreement otherwise; ties and disagreements count ½. Returns the verdict of the win_rate check,
`dpo_plugin.evaluation.win_rate_verdict`: passed, reasons, the counts, the win rate with a tie-aware
interval (failures left out), the conservative estimate the decision uses (failures as losses), the
tie, disagreement and failure rates, sign tests and the judge's position bias.
"""

_KWARGS = """
Args:
    policy_first (list): verdicts with the policy as the first answer (None or NaN: failure).
    policy_second (list): verdicts with the policy as the second answer (None or NaN: failure).
    threshold (float): the conservative lower bound must exceed it, default 0.5.
    max_failure_rate (float): the largest share of prompts the judge may fail on, default 0.1.
    confidence (float): interval level, default 0.95.
"""

#: The text each value is stored as: Arrow would turn True or "1" into 1.0 in a float column.
_TEXTS = {0.0: "0", 0.5: "0.5", 1.0: "1"}
_VALUES = {text: value for value, text in _TEXTS.items()}
_INVALID = "not a verdict: "


def _as_text(value):
    """A verdict as "0", "0.5", "1"; a failure as ""; anything else as "not a verdict: <description>"."""
    read = read_verdict(value)
    if isinstance(read, NotAVerdict):
        return _INVALID + read.description
    return "" if math.isnan(read) else _TEXTS[read]


def _from_text(text):
    if text.startswith(_INVALID):
        return NotAVerdict(text[len(_INVALID) :])
    return _VALUES.get(text)


class WinRate(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=(
                "Agresti & Coull 1998, Approximate is better than exact for interval estimation of binomial proportions"
            ),
            inputs_description=_KWARGS,
            features=datasets.Features(
                {"policy_first": datasets.Value("string"), "policy_second": datasets.Value("string")}
            ),
        )

    def add_batch(self, *, policy_first=None, policy_second=None, **kwargs):
        """Each verdict is read before Arrow stores it, so a boolean or a string is never a number."""
        texts = {
            name: None if values is None else [_as_text(v) for v in values]
            for name, values in (("policy_first", policy_first), ("policy_second", policy_second))
        }
        return super().add_batch(**texts, **kwargs)

    def add(self, *, policy_first=None, policy_second=None, **kwargs):
        """One prompt's two verdicts, read as in :meth:`add_batch`."""
        return super().add(policy_first=_as_text(policy_first), policy_second=_as_text(policy_second), **kwargs)

    def _compute(self, policy_first, policy_second, threshold=0.5, max_failure_rate=0.1, confidence=0.95):
        return win_rate_verdict(
            [_from_text(t) for t in policy_first],
            [_from_text(t) for t in policy_second],
            threshold=threshold,
            max_failure_rate=max_failure_rate,
            confidence=confidence,
        )
