"""Post-training evaluation: checks, judges, statistics and the report.

Works on any model without training: the checks see an :class:`~dpo_plugin.evaluation.context.EvalContext`
(built by the trainer after training, or by ``dpo-plugin evaluate`` for a saved model).
"""
