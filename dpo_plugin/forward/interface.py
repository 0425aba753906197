"""The forward seam: the one way reference strategies, checks and ``dpo-plugin evaluate`` get log-probabilities.

Everything that needs sequence log-probabilities of preference pairs asks a :class:`PairScorer`:
under the policy, under the policy with its PEFT adapters off, or under a given model, for one
collated batch (:meth:`PairScorer.logps`) or a whole tokenised split (:meth:`PairScorer.score`).
The scorer also knows the device, the policy's dtype, the tokenizer and the splits. Nothing here
imports a host: :class:`dpo_plugin.forward.scorer.Scorer` implements it over a host's head and collator (and
:func:`dpo_plugin.forward.scorer.pair_scorer` builds one for a model without a trainer), and owns the
batch layout. A batch is opaque to its users: they pass it back to the scorer.

Log-probabilities are summed over the completion tokens exactly as training sums the policy's
(TRL's LD-DPO weighting included when ``ld_alpha`` is set) and computed without gradients.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from torch import Tensor


@dataclass
class PairScores:
    """Summed completion log-probabilities of pairs under one model, with token counts (all ``[N]``, numpy)."""

    chosen: np.ndarray
    rejected: np.ndarray
    chosen_tokens: np.ndarray
    rejected_tokens: np.ndarray

    def __len__(self) -> int:
        return len(self.chosen)

    @classmethod
    def empty(cls) -> PairScores:
        values, counts = np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)
        return cls(values, values.copy(), counts, counts.copy())


class PairScorer(ABC):
    """Sequence log-probabilities of tokenised preference pairs (see the module docstring).

    Attributes: ``tokenizer``; ``policy`` (the unwrapped policy model); ``device`` and ``dtype``
    (a ``torch.device`` and the policy weights' ``torch.dtype``); ``initial_source`` (a hub id or
    folder holding the policy's initial weights, None when unknown, e.g. for a model built in
    memory); ``is_main_process`` (False in every process but the one that writes files).
    """

    tokenizer: Any
    policy: Any
    device: Any
    dtype: Any
    initial_source: str | None = None
    is_main_process: bool = True

    @abstractmethod
    def splits(self) -> Mapping[str, Any]:
        """The tokenised splits by name (``"train"``, ``"eval"``, …)."""

    @abstractmethod
    def batches(self, dataset: Any, *, batch_size: int | None = None) -> Iterator[Any]:
        """Collated batches of a tokenised split, in order, on the device."""

    @abstractmethod
    def logps(self, batch: Any, model: Any = None, *, adapters_off: bool = False) -> tuple[Tensor, Tensor]:
        """``(chosen, rejected)`` log-probabilities ``[B]`` of a batch under ``model`` (None: the policy).

        ``adapters_off``: the policy with its PEFT adapters disabled (or its frozen initial adapter,
        when training an existing adapter).
        """

    @abstractmethod
    def score(
        self,
        dataset: Any,
        model: Any = None,
        *,
        adapters_off: bool = False,
        desc: str = "Scoring",
        batch_size: int | None = None,
    ) -> PairScores:
        """Every pair of a tokenised split under ``model`` (as :meth:`logps`), in dataset order, with a progress bar."""

    @abstractmethod
    def batch_reference(self, batch: Any) -> tuple[Tensor, Tensor] | None:
        """The precomputed reference log-probabilities a batch carries, or None when it carries none."""

    @abstractmethod
    def adapters_off(self) -> AbstractContextManager[Any]:
        """A context manager yielding the unwrapped policy with its adapters disabled (see :meth:`logps`)."""

    @property
    @abstractmethod
    def reference_adapter(self) -> str | None:
        """The name of the policy's frozen initial adapter, when training an existing adapter; else None."""

    @abstractmethod
    def place(self, model: Any) -> Any:
        """``model`` ready for no-grad forwards here: on the device, in eval mode (wrapped as the engine needs)."""

    @abstractmethod
    def unwrap(self, model: Any) -> Any:
        """The plain module of a placed (possibly wrapped) model, e.g. to generate from it."""

    @abstractmethod
    def fingerprint(self, dataset: Any) -> str:
        """A digest of everything about a split that changes its log-probabilities, the weights excepted.

        The token ids, the settings of the forward (max length, truncation, LD-DPO, precision), the layout
        and the per-token head.
        """
