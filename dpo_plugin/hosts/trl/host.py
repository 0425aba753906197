"""The TRL host, registered as ``trl``: TRL's ``DPOTrainer`` and ``dpo-plugin train``'s YAML of ``trl dpo`` keys.

Nothing here imports TRL at module level: ``dpo-plugin plugins`` lists the host without loading it.
"""

from __future__ import annotations

from collections.abc import Sequence

from ...forward.backend import ForwardBackend
from ...hookspecs import Register, hookimpl
from ..base import Host, TrainResult


class TrlHost(Host):
    """TRL's ``DPOTrainer`` (``from dpo_plugin.trl import DPOConfig, DPOTrainer``; ``dpo-plugin train``)."""

    trl_versions = ">=1.14.1,<1.17"

    def backend(self) -> ForwardBackend:
        from .internals import TrlBackend

        return TrlBackend()

    def train(self, argv: Sequence[str]) -> TrainResult:
        from .run import run_training
        from .train_args import parse_train_args

        return run_training(parse_train_args(list(argv)))

    def train_help(self, full: bool = False) -> str:
        from .train_help import train_help

        return train_help(full=full)


@hookimpl
def register_hosts(register: Register) -> None:
    register("trl", TrlHost())
