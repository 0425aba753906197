"""``auto`` (the default) picks a strategy for the run."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterator
from typing import Any

from ..hookspecs import hookimpl
from ..registry import Register
from .adapter import AdapterReference
from .base import ReferenceStrategy
from .model import CopyReference, PathReference
from .none import NoReference
from .precomputed import PrecomputedReference

logger = logging.getLogger(__name__)


class AutoReference(ReferenceStrategy):
    """The fastest safe reference for the run; ``reference_params`` go to the chosen strategy.

    ``path`` for a ``ref_model`` passed in; ``none`` when no loss needs a reference; ``precomputed``
    when the run visits the whole training set at least once (the one reference pass then costs no
    more than the reference forwards it saves, and frees the reference's memory) and the checks can
    still reach the reference (PEFT adapters off, or the initial model reloaded from its folder or
    hub id); else ``adapter`` with PEFT and ``copy`` without (``copy`` also with PiSSA and OLoRA,
    whose initialisation rewrites the base weights). The choice and its reason are logged.
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
        full_pass: bool = False,
    ) -> Any:
        adapter_off = peft and not base_weights_change
        reloadable = bool(getattr(getattr(policy, "config", None), "name_or_path", ""))
        fits = set(self.params) <= set(inspect.signature(PrecomputedReference.__init__).parameters)
        if ref_model is not None:
            chosen: type[ReferenceStrategy] = PathReference
            reason = "a ref_model was passed"
        elif not needs_reference:
            chosen, reason = NoReference, "no chosen loss needs a reference"
        elif full_pass and fits and (adapter_off or reloadable or not checks):
            chosen = PrecomputedReference
            reason = "the run visits every training pair at least once and the reference is frozen"
        elif adapter_off:
            chosen, reason = AdapterReference, "PEFT: disabling the adapters gives the initial model"
        else:
            chosen, reason = CopyReference, "full fine-tuning" if not peft else "the adapter rewrites the base weights"
        self.delegate = chosen.from_params(self.params)
        logger.info("reference: auto → %s (%s).", chosen.name, reason)
        return self.delegate.prepare(
            policy,
            ref_model=ref_model,
            peft=peft,
            base_weights_change=base_weights_change,
            needs_reference=needs_reference,
            checks=checks,
            full_pass=full_pass,
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
