"""Where scoring forwards run: the device, the precision, and the processes sharing the work."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import Tensor

T = TypeVar("T")
_ITSELF = object()


def per_model(function: Callable[[Any], T]) -> Callable[[Any], T]:
    """``function(model)`` computed once per model object and remembered while the model lives.

    For accelerate's ``unwrap_model`` and ``is_peft_model``, which read installed packages' metadata
    on every call (about 2 ms each: a tenth of a small model's step when called per forward). What
    they answer for a model object does not change; a new wrapper is a new object.
    """
    answers: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()

    def remembered(model: Any) -> T:
        try:
            answer = answers.get(model)
        except TypeError:  # not weakly referenceable: ask every time
            return function(model)
        if answer is None:
            answer = function(model)
            answers[model] = _ITSELF if answer is model else answer  # never a strong reference to the key
        return model if answer is _ITSELF else answer

    return remembered


@dataclass
class Engine:
    """Where and how scoring forwards run: device, precision, and the processes sharing the work."""

    device: torch.device
    autocast: Callable[[], AbstractContextManager[Any]]
    shard: Callable[[Any], Iterable[Any]]  # a DataLoader → this process's batches, on the device
    gather: Callable[[Tensor], Tensor]  # a tensor of this process's rows → every process's, in dataset order
    unwrap: Callable[[Any], Any]
    is_main_process: bool = True

    @classmethod
    def of(cls, accelerator: Any) -> Engine:
        """A trainer's accelerator: its device, mixed precision and processes."""
        return cls(
            accelerator.device,
            accelerator.autocast,
            accelerator.prepare,
            accelerator.gather_for_metrics,
            per_model(accelerator.unwrap_model),
            accelerator.is_main_process,
        )

    @classmethod
    def local(cls, device: torch.device | str | None = None, bf16: bool = False) -> Engine:
        """One process on ``device`` (default: CUDA when available), bf16 autocast if asked."""
        where = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))

        def autocast() -> AbstractContextManager[Any]:
            return torch.autocast(where.type, dtype=torch.bfloat16, enabled=bf16)

        return cls(where, autocast, _on_device(where), _same, _same)

    def alone(self) -> Engine:
        """The same device and precision for this process alone (no sharding, no gathering)."""
        return Engine(self.device, self.autocast, _on_device(self.device), _same, self.unwrap, True)


def _same(value: Any) -> Any:
    return value


def _on_device(device: torch.device) -> Callable[[Any], Iterator[Any]]:
    """A DataLoader's batches moved to ``device``, all of them (one process)."""

    def shard(loader: Any) -> Iterator[Any]:
        for batch in loader:
            yield {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}

    return shard
