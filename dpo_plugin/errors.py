"""The exceptions dpo_plugin raises: every one is a ``ValueError`` with a message saying what to fix."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class DpoPluginError(ValueError):
    """Base class of every error dpo_plugin raises about bad input or a broken plugin."""

    #: the ``dpo-plugin`` command's exit code for this error
    exit_code: int = 2


class ConfigError(DpoPluginError):
    """A configuration value is wrong (unknown key, wrong type, inconsistent fields)."""


class DuplicateNameError(DpoPluginError):
    """Two plugins registered the same name for the same kind of item."""


class PluginContractError(DpoPluginError):
    """A plugin's object broke the contract (e.g. a loss returned the wrong shape)."""


class UnknownNameError(DpoPluginError, KeyError):
    """A name that no plugin registered; the message lists the registered names and the closest match."""

    def __init__(self, kind: str, name: str, known: Iterable[str]):
        known = sorted(known)
        close = difflib.get_close_matches(str(name), known, n=1, cutoff=0.5)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        listing = ", ".join(known) if known else "(none registered)"
        super().__init__(f"Unknown {kind} {name!r}.{hint} Registered {kind} names: {listing}.")
        self.kind, self.name, self.known, self.closest = kind, name, known, close[0] if close else None

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])
