"""The ``none`` strategy: no reference model, for reference-free losses."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..hookspecs import Register, hookimpl
from .base import ReferenceStrategy, RunFacts

if TYPE_CHECKING:
    from torch import Tensor


class NoReference(ReferenceStrategy):
    """No reference model, for reference-free losses (SimPO, CPO, ORPO, SFT); the checks may name one (``model``)."""

    name = "none"
    provides_logps = False

    def __init__(self, *, model: str | None = None):
        super().__init__()
        self.source = model

    def prepare(self, policy: Any, run: RunFacts, *, ref_model: Any = None) -> Any:
        if run.needs_reference:
            raise ConfigError(
                "reference: none, but a chosen loss needs a reference model; choose another reference strategy "
                "or only reference-free losses."
            )
        return super().prepare(policy, run, ref_model=ref_model)

    def logps(self, batch: Any) -> tuple[Tensor, Tensor]:
        raise ConfigError(
            "reference: none has no reference log-probabilities; the chosen losses must be reference-free."
        )

    def generation_model(self) -> AbstractContextManager[Any]:
        return self.initial_model(self.source)

    def describe(self) -> str:
        return "none (reference-free)" + (f"; checks compare with {self.source}" if self.source else "")


@hookimpl
def register_reference_strategies(register: Register) -> None:
    register("none", NoReference)
