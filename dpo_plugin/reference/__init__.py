"""Built-in reference-model strategies: how a run obtains the reference log-probabilities.

A strategy is a class registered through ``register_reference_strategies``; the trainer builds
one from ``reference_params`` and drives its lifecycle (see :class:`~dpo_plugin.reference.base.ReferenceStrategy`).
"""
