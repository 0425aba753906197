"""dpo_plugin: pluggable Direct Preference Optimization for TRL's DPOTrainer.

Losses, reference-model strategies, adapters, judges and post-training checks are registered
through pluggy hooks (see :mod:`dpo_plugin.hookspecs`); the trainer integration lives in
:mod:`dpo_plugin.trl`.
"""

from .errors import ConfigError, DpoPluginError, DuplicateNameError, PluginContractError, UnknownNameError
from .hookspecs import hookimpl
from .plugins import adapters, checks, get_plugin_manager, judges, losses, reference_strategies
from .types import CheckResult, LossOutput, PairLogps

__all__ = [
    "CheckResult",
    "ConfigError",
    "DpoPluginError",
    "DuplicateNameError",
    "LossOutput",
    "PairLogps",
    "PluginContractError",
    "UnknownNameError",
    "adapters",
    "checks",
    "get_plugin_manager",
    "hookimpl",
    "judges",
    "losses",
    "reference_strategies",
]

__version__ = "0.1.0"
