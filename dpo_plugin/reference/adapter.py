"""The ``adapter`` strategy: the policy itself with its PEFT adapters disabled; no copy."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from ..errors import ConfigError
from ..hookspecs import hookimpl
from ..registry import Register
from .base import ReferenceStrategy


class AdapterReference(ReferenceStrategy):
    """PEFT adapters disabled on the policy (no copy); when training an existing adapter, a frozen copy of it ("ref")."""

    name = "adapter"

    def prepare(self, policy: Any, *, peft: bool = False, base_weights_change: bool = False, **kwargs: Any) -> Any:
        super().prepare(policy, **kwargs)
        if not peft:
            raise ConfigError(
                "reference: adapter needs a PEFT adapter (adapter: lora/dora/…, use_peft, or a peft_config); "
                "for full fine-tuning use reference: copy, path or precomputed (auto picks copy)."
            )
        if base_weights_change:
            raise ConfigError(
                "reference: adapter cannot be used with this adapter recipe: its initialisation (PiSSA/OLoRA) "
                "rewrites the base weights, so disabling the adapter no longer gives the initial model. "
                "Use reference: copy (auto picks it)."
            )
        return None

    def logps(self, inputs: Mapping[str, Any]) -> tuple[Any, Any]:
        return self.trainer.sequence_logps(self.trainer.model, inputs, adapters_off=True)

    @contextlib.contextmanager
    def generation_model(self) -> Iterator[Any]:
        with self.trainer.adapters_off() as model:
            yield model

    def memory_bytes(self) -> int:
        model = self.trainer.accelerator.unwrap_model(self.trainer.model)
        ref = [p for name, p in model.named_parameters() if ".ref." in name]
        return sum(p.numel() * p.element_size() for p in ref)

    def describe(self) -> str:
        model = self.trainer.accelerator.unwrap_model(self.trainer.model) if self.trainer else None
        if model is not None and "ref" in getattr(model, "peft_config", {}):
            return "adapter (a frozen copy of the initial adapter, 'ref')"
        return "adapter (the policy with its PEFT adapters disabled)"


@hookimpl
def register_reference_strategies(register: Register) -> None:
    register("adapter", AdapterReference)
