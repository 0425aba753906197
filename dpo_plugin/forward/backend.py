"""What a host lends the host-free forward: its tokenisation, its padded collator and its per-token head.

Scoring must see exactly what training sees, so the pieces that define it come from the host whose
trainer runs (TRL 1.16's fused LM head and tokenisation, or TRL 1.14's under Axolotl). Code that
scores without a trainer (``dpo-plugin evaluate``, ``check-data``, a strategy's unit test) takes the
default host's backend, looked up by name in the hosts registry.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from .heads import TokenHead

#: A collator: tokenised rows (``prompt_ids``, ``chosen_ids``, ``rejected_ids``) → a batch of tensors.
Collator = Callable[[list[dict[str, Any]]], dict[str, Any]]


class ForwardBackend(Protocol):
    """A host's tokenisation, padded collation and per-token head (see the module docstring)."""

    @property
    def head(self) -> TokenHead:
        """The per-token head the host's trainer computes log-probabilities with."""
        ...

    def padded_collator(
        self,
        pad_token_id: int,
        *,
        max_length: int | None = None,
        truncation_mode: str = "keep_start",
        pad_to_multiple_of: int | None = None,
    ) -> Collator:
        """The host's padded ``[chosen; rejected]`` collator (truncating each sequence as the host does)."""
        ...

    def prepare_pairs(
        self,
        dataset: Any,
        tokenizer: Any,
        *,
        max_length: int | None = None,
        truncation_mode: str = "keep_start",
        name: str = "eval",
    ) -> Any:
        """A preference split tokenised as the host's trainer tokenises it (``prompt_ids``, ``chosen_ids``, …)."""
        ...

    def extract_prompt(self, example: dict[str, Any]) -> dict[str, Any]:
        """A pair with an implicit prompt (shared start of chosen and rejected) split as the host splits it."""
        ...


def default_backend() -> ForwardBackend:
    """The default host's backend (``trl``), through the hosts registry."""
    from ..hosts.base import DEFAULT_HOST
    from ..plugins import hosts

    return hosts()[DEFAULT_HOST].obj.backend()
