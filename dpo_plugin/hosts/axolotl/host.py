"""The Axolotl host, registered as ``axolotl``. Nothing here imports Axolotl until it is used.

Axolotl users train with ``axolotl train FILE.yml`` (or ``python -m axolotl.cli.train FILE.yml``), the
YAML naming ``dpo_plugin.hosts.axolotl.DPOPlugin`` under ``plugins:``; ``dpo-plugin train --host axolotl
--config FILE.yml [--key value …]`` does the same from this package's command.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...errors import ConfigError
from ...forward.backend import ForwardBackend
from ...hookspecs import Register, hookimpl
from ..base import Host, TrainResult

INSTALL = "pip install axolotl==0.21.0 (Python >= 3.12), then this package beside it"


def _require_axolotl() -> None:
    if importlib.util.find_spec("axolotl") is None:
        raise ConfigError(f"The axolotl host needs Axolotl, which is not installed here: {INSTALL}.")


class AxolotlHost(Host):
    """Axolotl's DPO trainer (``rl: dpo``; ``plugins: [dpo_plugin.hosts.axolotl.DPOPlugin]``); TRL 1.14.1 inside."""

    trl_versions = ">=1.14.1,<1.17"

    def backend(self) -> ForwardBackend:
        from ..trl.internals import TrlBackend

        return TrlBackend()

    def train(self, argv: Sequence[str]) -> TrainResult:
        _require_axolotl()
        from .run import run_training

        return run_training(list(argv))

    def train_help(self, full: bool = False) -> str:
        return (
            "usage: dpo-plugin train --host axolotl --config FILE.yml [--key value …]\n\n"
            "Trains with Axolotl from its own YAML (rl: dpo), with plugins: [dpo_plugin.hosts.axolotl.DPOPlugin]; "
            "the same as `axolotl train FILE.yml`. The plugin's keys are the TRL YAML's (reference, packing, checks, "
            "judge, loss_params …); docs/coming-from-axolotl.md maps the rest.\n"
        )


def output_dir_of(cfg: Any) -> Path:
    """Where an Axolotl run writes (its ``output_dir``, Axolotl's default ``./model-out``)."""
    return Path(cfg.get("output_dir") or "./model-out")


@hookimpl
def register_hosts(register: Register) -> None:
    register("axolotl", AxolotlHost())
