"""The host contract: what a fine-tuning framework supplies so that a DPO session runs in its trainer.

A host is registered like everything else (``register_hosts``: ``register("trl", TrlHost())``). The
registered object supplies its tokenisation and per-token head (a
:class:`~dpo_plugin.forward.backend.ForwardBackend`, for scoring without a trainer), the TRL releases it
runs with (checked before any model loads), and its CLI entry (``dpo-plugin train --host NAME``). The
host's package also holds its config (the plugin settings, :class:`~dpo_plugin.settings.PluginSettings`,
read from the host's own keys) and its trainer, which hands each step to a
:class:`~dpo_plugin.session.DPOSession`. Everything else — losses, strategies, layouts, guard, checks —
is the session's and written once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ..errors import ConfigError
from ..forward.backend import ForwardBackend

#: The host ``dpo-plugin train``, ``evaluate`` and ``check-data`` use unless told otherwise.
DEFAULT_HOST = "trl"


@dataclass
class TrainResult:
    """What a training run produced: where it saved, its metrics, the checks' report (None without checks)."""

    output_dir: Path
    metrics: dict[str, Any]
    report: dict[str, Any] | None
    main_process: bool = True
    strict_checks: bool = False


def flag_names(argv: Sequence[str]) -> set[str]:
    """The option names in ``argv`` (``--max-steps=3`` → ``max_steps``; argparse's ``--no_X`` also counts as ``X``)."""
    names = {arg[2:].split("=", 1)[0].replace("-", "_") for arg in argv if arg.startswith("--")}
    return names | {name[3:] for name in names if name.startswith("no_")}


class Host(ABC):
    """A fine-tuning framework whose trainer runs a DPO session (see the module docstring)."""

    #: The TRL releases the host runs with, a PEP 440 specifier (``>=1.16,<1.17``).
    trl_versions: ClassVar[str] = ""

    def check_versions(self) -> None:
        """Before any model loads: the installed TRL must be in :attr:`trl_versions` (a ConfigError naming both)."""
        import importlib.metadata

        from packaging.specifiers import SpecifierSet

        try:
            installed = importlib.metadata.version("trl")
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed is None or installed not in SpecifierSet(self.trl_versions):
            found = f"TRL {installed} is installed" if installed else "TRL is not installed"
            raise ConfigError(
                f"The {type(self).__name__} host runs with TRL {self.trl_versions}, but {found}: "
                f"pip install 'trl{self.trl_versions}'."
            )

    @abstractmethod
    def backend(self) -> ForwardBackend:
        """Its tokenisation, padded collator and per-token head, for scoring exactly as its trainer does."""

    @abstractmethod
    def train(self, argv: Sequence[str]) -> TrainResult:
        """Its CLI entry: train from ``--config FILE [--key value …]`` (``dpo-plugin train``)."""

    def train_help(self, full: bool = False) -> str:
        """The help of its CLI entry (``dpo-plugin train --help``; ``full``: every key)."""
        return f"dpo-plugin train --host {type(self).__name__} --config FILE\n"
