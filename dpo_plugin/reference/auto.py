"""``auto`` (the default) picks a strategy for the run, by name through the registry."""

from __future__ import annotations

import inspect
import logging
from contextlib import AbstractContextManager
from typing import Any

from ..hookspecs import Register, hookimpl
from .base import ReferenceStrategy, RunFacts

logger = logging.getLogger(__name__)


def _strategy(name: str) -> type[ReferenceStrategy]:
    from ..plugins import reference_strategies

    strategy: type[ReferenceStrategy] = reference_strategies()[name].obj
    return strategy


def choose(policy: Any, run: RunFacts, *, ref_model: Any, params: set[str]) -> tuple[str, str]:
    """The strategy ``auto`` takes for the run, and why (see :class:`AutoReference`)."""
    adapter_off = run.peft and not run.base_weights_change
    reloadable = bool(getattr(getattr(policy, "config", None), "name_or_path", ""))
    fits = params <= set(inspect.signature(_strategy("precomputed").__init__).parameters)
    if ref_model is not None:
        return "path", "a ref_model was passed"
    if not run.needs_reference:
        return "none", "no chosen loss needs a reference"
    once = run.full_pass and fits and (adapter_off or reloadable or not run.checks)
    if once and not run.streaming_eval:
        return "precomputed", "the run visits every training pair at least once and the reference is frozen"
    streaming = "; not precomputed: an eval split streams, so it cannot be scored once before training" if once else ""
    if adapter_off:
        return "adapter", "PEFT: disabling the adapters gives the initial model" + streaming
    return "copy", ("full fine-tuning" if not run.peft else "the adapter rewrites the base weights") + streaming


class AutoReference(ReferenceStrategy):
    """The fastest safe reference for the run; ``reference_params`` go to the chosen strategy.

    ``path`` for a ``ref_model`` passed in; ``none`` when no loss needs a reference; ``precomputed``
    when the run visits the whole training set at least once (the one reference pass then costs no
    more than the reference forwards it saves, and frees the reference's memory), no eval split given
    to the trainer streams (each split is scored once, before training; a streaming split passed to
    ``evaluate()`` later is scored batch by batch), and the checks can still reach the reference (PEFT
    adapters off, or the initial model reloaded from its folder or hub id); else ``adapter`` with PEFT
    and ``copy`` without (``copy`` also with PiSSA and OLoRA, whose initialisation rewrites the base
    weights). The choice and its reason are logged. Each is looked up by name in the registry, so a
    plugin that overrides a built-in strategy is used here too.
    """

    name = "auto"

    def __init__(self, **params: Any):
        super().__init__()
        self.params = params
        self.delegate: ReferenceStrategy | None = None

    def prepare(self, policy: Any, run: RunFacts, *, ref_model: Any = None) -> Any:
        name, reason = choose(policy, run, ref_model=ref_model, params=set(self.params))
        self.delegate = _strategy(name).from_params(self.params)
        logger.info("reference: auto → %s (%s).", name, reason)
        return self.delegate.prepare(policy, run, ref_model=ref_model)

    @property
    def chosen(self) -> ReferenceStrategy:
        if self.delegate is None:
            raise RuntimeError("reference: auto has not chosen a strategy yet (prepare runs first)")
        return self.delegate

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
        self.chosen.setup(scorer, model)

    def logps(self, batch: Any) -> tuple[Any, Any]:
        return self.chosen.logps(batch)

    def score(self, dataset: Any) -> Any:
        return self.chosen.score(dataset)

    def batch_by_batch(self, split: str) -> AbstractContextManager[Any]:
        return self.chosen.batch_by_batch(split)

    def on_step_end(self, state: Any) -> None:
        self.chosen.on_step_end(state)

    def generation_model(self) -> AbstractContextManager[Any]:
        return self.chosen.generation_model()

    def memory_bytes(self) -> int:
        return self.delegate.memory_bytes() if self.delegate else 0

    def describe(self) -> str:
        return f"auto → {self.delegate.describe()}" if self.delegate else "auto"


@hookimpl
def register_reference_strategies(register: Register) -> None:
    register("auto", AutoReference)
