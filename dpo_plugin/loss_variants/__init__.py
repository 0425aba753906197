"""Built-in DPO loss variants, one small module per family.

Every loss is a pure function ``fn(logps: PairLogps, *, <params>) -> LossOutput`` returning
per-pair values; shared mechanics (f-divergence scores, length normalisation, implicit rewards)
live in :mod:`dpo_plugin.loss_variants.scores`. Each module registers its losses through the
``register_losses`` hook, exactly as a third-party plugin would.

(The package is not called ``losses``: a subpackage of that name would replace the public
``dpo_plugin.losses()`` function with itself as soon as it is imported.)
"""
