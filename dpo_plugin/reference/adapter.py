"""The ``adapter`` strategy: the policy itself with its PEFT adapters disabled; no copy."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

from ..errors import ConfigError
from ..hookspecs import Register, hookimpl
from .base import ReferenceStrategy, RunFacts


class AdapterReference(ReferenceStrategy):
    """PEFT adapters disabled on the policy (no copy); when training an existing adapter, a frozen copy of it ("ref")."""  # noqa: E501

    name = "adapter"

    def prepare(self, policy: Any, run: RunFacts, *, ref_model: Any = None) -> Any:
        super().prepare(policy, run, ref_model=ref_model)
        if not run.peft:
            raise ConfigError(
                "reference: adapter needs a PEFT adapter (adapter: lora/dora/…, use_peft, or a peft_config); "
                "for full fine-tuning use reference: copy, path or precomputed (auto picks copy)."
            )
        if run.base_weights_change:
            raise ConfigError(
                "reference: adapter cannot be used with this adapter recipe: its initialisation (PiSSA/OLoRA) "
                "rewrites the base weights, so disabling the adapter no longer gives the initial model. "
                "Use reference: copy (auto picks it)."
            )
        return None

    def logps(self, batch: Any) -> tuple[Any, Any]:
        return self.scorer.logps(batch, adapters_off=True)

    def score(self, dataset: Any) -> Any:
        return self.scorer.score(dataset, adapters_off=True, desc="Scoring (reference)")

    def generation_model(self) -> AbstractContextManager[Any]:
        return self.scorer.adapters_off()

    def memory_bytes(self) -> int:
        frozen = self.scorer.reference_adapter if self.is_set_up else None
        if frozen is None:
            return 0
        marker = f".{frozen}."
        return sum(p.numel() * p.element_size() for name, p in self.scorer.policy.named_parameters() if marker in name)

    def describe(self) -> str:
        if self.is_set_up and self.scorer.reference_adapter is not None:
            return f"adapter (a frozen copy of the initial adapter, {self.scorer.reference_adapter!r})"
        return "adapter (the policy with its PEFT adapters disabled)"


@hookimpl
def register_reference_strategies(register: Register) -> None:
    register("adapter", AdapterReference)
