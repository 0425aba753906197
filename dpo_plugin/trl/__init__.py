"""The public face of the TRL host (:mod:`dpo_plugin.hosts.trl`): the drop-in ``DPOConfig`` and ``DPOTrainer``."""

from ..hosts.trl import DPOConfig, DPOTrainer

__all__ = ["DPOConfig", "DPOTrainer"]
