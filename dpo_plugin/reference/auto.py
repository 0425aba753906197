"""``auto`` (the default) picks a strategy for the run."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from ..hookspecs import hookimpl
from ..registry import Register
from .adapter import AdapterReference
from .base import ReferenceStrategy
from .model import CopyReference, PathReference
from .none import NoReference

logger = logging.getLogger(__name__)


class AutoReference(ReferenceStrategy):
    """``path`` for a ``ref_model`` passed in, ``none`` when no loss needs a reference, ``adapter`` with PEFT, else ``copy``.

    With an adapter recipe that rewrites the base weights (PiSSA, OLoRA), ``copy`` instead of ``adapter``.
    ``reference_params`` go to the chosen strategy.
    """

    name = "auto"

    def __init__(self, **params: Any):
        super().__init__()
        self.params = params
        self.delegate: ReferenceStrategy | None = None

    def prepare(
        self,
        policy: Any,
        *,
        ref_model: Any = None,
        peft: bool = False,
        base_weights_change: bool = False,
        needs_reference: bool = True,
        checks: bool = False,
    ) -> Any:
        if ref_model is not None:
            chosen: type[ReferenceStrategy] = PathReference
        elif not needs_reference:
            chosen = NoReference
        elif peft and not base_weights_change:
            chosen = AdapterReference
        else:
            chosen = CopyReference
        self.delegate = chosen.from_params(self.params)
        logger.info("reference: auto → %s", chosen.name)
        return self.delegate.prepare(
            policy,
            ref_model=ref_model,
            peft=peft,
            base_weights_change=base_weights_change,
            needs_reference=needs_reference,
            checks=checks,
        )

    @property
    def provides_logps(self) -> bool:  # type: ignore[override]
        return self.delegate is None or self.delegate.provides_logps

    @property
    def precomputes(self) -> bool:  # type: ignore[override]
        return self.delegate is not None and self.delegate.precomputes

    @property
    def unavailable(self) -> str | None:
        return self.delegate.unavailable if self.delegate else None

    def setup(self, scorer: Any, model: Any = None) -> None:
        super().setup(scorer, model)
        self.delegate.setup(scorer, model)

    def logps(self, batch: Any) -> tuple[Any, Any]:
        return self.delegate.logps(batch)

    def score(self, dataset: Any) -> Any:
        return self.delegate.score(dataset)

    def on_step_end(self, state: Any) -> None:
        self.delegate.on_step_end(state)

    def generation_model(self) -> Iterator[Any]:  # type: ignore[override]
        return self.delegate.generation_model()

    def memory_bytes(self) -> int:
        return self.delegate.memory_bytes() if self.delegate else 0

    def describe(self) -> str:
        return f"auto → {self.delegate.describe()}" if self.delegate else "auto"


@hookimpl
def register_reference_strategies(register: Register) -> None:
    register("auto", AutoReference)
