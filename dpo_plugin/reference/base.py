"""The reference-strategy lifecycle: the base class every strategy subclasses.

The trainer drives a strategy through these calls, in order:

1. ``prepare(policy, run, ref_model=None)`` before the host's trainer exists (``run``: the
   :class:`RunFacts`): returns the reference model the host's trainer should hold (a frozen copy, a
   loaded model) or ``None``; the host never reloads a reference from disk.
2. ``setup(scorer, model)`` once the trainer exists, before training: ``scorer`` is the
   :class:`~dpo_plugin.forward.interface.PairScorer` (the only way to log-probabilities; a strategy never
   sees the trainer) and ``model`` what ``prepare`` returned, placed on the device (or None).
   Loading, copying and precomputing happen by here.
3. ``logps(batch) -> (ref_chosen, ref_rejected)`` for every batch that needs a reference;
   ``score(split)`` for every pair of a split (the checks, TRL's precompute hook); ``batch_by_batch(split)``
   around the evaluation of a streaming split that a precomputing strategy did not score.
4. ``on_step_end(state)`` after every optimizer step (e.g. TR-DPO syncs).
5. ``generation_model()``: a context manager yielding the model the post-training checks compare
   against (``None`` when there is none; ``unavailable`` then says why); ``memory_bytes()`` what
   the strategy keeps in memory; ``describe()`` a one-line account for logs and the report.

A strategy is unit-tested without a trainer: ``scorer = dpo_plugin.forward.pair_scorer(policy,
tokenizer, {"train": rows})``, then ``strategy.setup(scorer, scorer.place(strategy.prepare(policy)))``.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:
    from torch import Tensor

    from ..forward.interface import PairScorer, PairScores

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunFacts:
    """What a strategy is told about the run when it prepares.

    ``peft``: the policy trains a PEFT adapter; ``base_weights_change``: the adapter's initialisation
    rewrites the base weights (PiSSA, OLoRA), so disabling it no longer gives the initial model;
    ``needs_reference``: some chosen loss needs reference log-probs; ``checks``: post-training checks
    will compare against the reference (keep what they need); ``full_pass``: the run's optimizer
    steps visit every training pair at least once; ``streaming_eval``: an eval split given to the trainer
    is an ``IterableDataset``, which cannot be scored once before training; ``initial_copy``: a copy of
    the initial policy the host already loaded (Axolotl loads one when training without an adapter) — a
    strategy that needs a frozen copy takes it instead of copying, and one that needs none lets it go.
    """

    peft: bool = False
    base_weights_change: bool = False
    needs_reference: bool = True
    checks: bool = False
    full_pass: bool = False
    streaming_eval: bool = False
    initial_copy: Any = field(default=None, compare=False, repr=False)


class ReferenceStrategy:
    """Base class of reference strategies; subclasses take their options as keyword-only ``__init__`` arguments."""

    #: registry name, set by each subclass
    name: str = ""
    #: False for strategies that produce no reference log-probabilities (``none``)
    provides_logps: bool = True
    #: True for strategies that score every split once before training (the trainer then hands each
    #: split TRL prepares, and each dataset passed to ``evaluate()`` later, to :meth:`score`)
    precomputes: bool = False

    def __init__(self) -> None:
        self._scorer: PairScorer | None = None
        #: the reference model ``prepare`` returned, placed by the trainer (None for strategies without one)
        self.model: Any = None
        self._unavailable: str | None = None

    @property
    def scorer(self) -> PairScorer:
        """The run's scorer, from :meth:`setup` on (the strategy's only way to log-probabilities)."""
        if self._scorer is None:
            raise RuntimeError(f"reference strategy {self.name!r} is not set up yet (setup(scorer, model) comes first)")
        return self._scorer

    @property
    def is_set_up(self) -> bool:
        return self._scorer is not None

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None) -> ReferenceStrategy:
        """Build the strategy from ``reference_params``; unknown or missing options are a ConfigError."""
        params = dict(params or {})
        accepted = [p for p in inspect.signature(cls.__init__).parameters.values() if p.name != "self"]
        names = {p.name for p in accepted if p.kind is inspect.Parameter.KEYWORD_ONLY}
        open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted)
        unknown = sorted(set(params) - names)
        if unknown and not open_ended:
            takes = ", ".join(sorted(names)) or "no options"
            raise ConfigError(f"reference: {cls.name} does not take {unknown} in reference_params; it takes: {takes}.")
        try:
            return cls(**params)
        except TypeError as error:
            raise ConfigError(f"reference: {cls.name}: {error}") from None

    def prepare(self, policy: Any, run: RunFacts, *, ref_model: Any = None) -> Any:
        """Before the host's trainer exists: return the reference model it should hold, or ``None``.

        ``ref_model``: a reference model the user passed to the trainer (a strategy that builds its
        own refuses it).
        """
        if ref_model is not None:
            raise ConfigError(
                f"A ref_model was passed, but reference: {self.name} builds its own reference. Use reference: path "
                "(or auto) to train against the model you pass, or don't pass ref_model."
            )
        return None

    def setup(self, scorer: PairScorer, model: Any = None) -> None:
        """Once the trainer (or another scorer's owner) exists, before training."""
        self._scorer, self.model = scorer, model

    def logps(self, batch: Any) -> tuple[Tensor, Tensor]:
        """``(ref_chosen, ref_rejected)`` summed log-probabilities of a collated batch."""
        raise NotImplementedError(f"reference strategy {self.name!r} does not implement logps(batch)")

    def score(self, dataset: Any) -> PairScores | None:
        """Reference log-probabilities of every pair of a tokenised split (None: there is no reference)."""
        with self.generation_model() as model:
            return None if model is None else self.scorer.score(dataset, model, desc="Scoring (reference)")

    def on_step_end(self, state: Any) -> None:
        """After every optimizer step."""

    def batch_by_batch(self, split: str) -> contextlib.AbstractContextManager[Any]:
        """Within the block, batches of a split that was not scored before (one that streams) get their reference
        log-probabilities as they come; strategies that score every batch anyway need nothing here."""
        return contextlib.nullcontext()

    def generation_model(self) -> contextlib.AbstractContextManager[Any]:
        """A context manager yielding the reference model the checks generate from and score with (None: none)."""
        return contextlib.nullcontext(None)

    def memory_bytes(self) -> int:
        """Bytes of reference weights or caches this strategy keeps in memory."""
        return 0

    def describe(self) -> str:
        """One line for logs and the report."""
        return self.name

    @property
    def unavailable(self) -> str | None:
        """Why ``generation_model()`` yields None, when it does (the checks show it)."""
        return self._unavailable

    @contextlib.contextmanager
    def initial_model(self, source: str | None = None, dtype: str | None = None) -> Iterator[Any]:
        """A reference for the checks when the strategy keeps none in memory, loaded for the block and freed after.

        ``source`` (``reference_params.model``) if given, else the policy's initial weights
        (``scorer.initial_source``), else None. When it cannot be loaded (e.g. a hub id while
        offline), yields None and sets :attr:`unavailable` (naming the id and the error), so the
        checks skip with that reason instead of crashing.
        """
        from .model import load_reference_model

        source = source or self.scorer.initial_source
        if source is None:
            self._unavailable = (
                "the initial model cannot be reloaded (built in memory); set reference_params: {model: ...}"
            )
            yield None
            return
        try:
            model = self.scorer.place(load_reference_model(source, policy=self.scorer.policy, dtype=dtype))
        except Exception as error:  # noqa: BLE001 -- offline hub, missing or incompatible model: the checks skip
            self._unavailable = (
                f"the reference model {source!r} for the checks could not be loaded: {type(error).__name__}: {error}"
            )
            logger.warning("%s", self._unavailable)
            yield None
            return
        try:
            yield model
        finally:
            del model
            release_memory()


def parameter_bytes(model: Any) -> int:
    """Bytes of a module's parameters and buffers this process holds (its shards, under ZeRO-3 and FSDP2)."""
    from ..distributed import local_part

    tensors = [local_part(t) for t in [*model.parameters(), *model.buffers()]]
    return sum(t.numel() * t.element_size() for t in tensors)


def release_memory() -> None:
    """Collect freed Python objects and return cached accelerator memory (after dropping a model)."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
