"""Post-training evaluation: checks, judges, statistics and the report.

Works on any model without training: the checks see an :class:`~dpo_plugin.evaluation.context.EvalContext`
(built by the trainer after training, or by ``dpo-plugin evaluate`` for a saved model). Their decisions
are pure functions, usable without a model: :func:`win_rate_verdict`, :func:`length_controlled_verdict`,
:func:`margin_verdict` and :func:`degeneration_verdict`.
"""

from .degeneration import degeneration_verdict
from .length_control import length_controlled_verdict
from .verdicts import margin_verdict, win_rate_verdict

__all__ = ["degeneration_verdict", "length_controlled_verdict", "margin_verdict", "win_rate_verdict"]
