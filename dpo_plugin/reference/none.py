"""The ``none`` strategy: no reference model, for reference-free losses."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..errors import ConfigError
from ..hookspecs import hookimpl
from ..registry import Register
from .base import ReferenceStrategy


class NoReference(ReferenceStrategy):
    """No reference model, for reference-free losses (SimPO, CPO, ORPO, SFT); the checks may name one (``model``)."""

    name = "none"
    provides_logps = False

    def __init__(self, *, model: str | None = None):
        super().__init__()
        self.source = model

    def prepare(self, policy: Any, *, needs_reference: bool = True, **kwargs: Any) -> Any:
        if needs_reference:
            raise ConfigError(
                "reference: none, but a chosen loss needs a reference model; choose another reference strategy "
                "or only reference-free losses."
            )
        return super().prepare(policy, **kwargs)

    def logps(self, batch: Any) -> tuple[None, None]:
        return None, None

    def generation_model(self) -> Iterator[Any]:  # type: ignore[override]
        return self.initial_model(self.source)

    def describe(self) -> str:
        return "none (reference-free)" + (f"; checks compare with {self.source}" if self.source else "")


@hookimpl
def register_reference_strategies(register: Register) -> None:
    register("none", NoReference)
