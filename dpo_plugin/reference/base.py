"""The reference-strategy lifecycle and the ``none`` strategy.

The trainer drives a strategy through these calls, in order:

1. ``prepare(policy, ref_model=..., peft=..., base_weights_change=..., needs_reference=...)``
   before TRL's trainer exists: returns the reference model TRL should hold (a frozen copy, a
   loaded model) or ``None``; TRL never reloads a reference from disk.
2. ``setup(trainer)`` once the trainer exists, before training (e.g. precompute and cache).
3. ``logps(inputs) -> (ref_chosen, ref_rejected)`` for every batch that needs a reference.
4. ``on_step_end(state)`` after every optimizer step (e.g. TR-DPO syncs).
5. ``generation_model()``: a context manager yielding the model the post-training checks compare
   against (``None`` when there is none); ``memory_bytes()`` what the strategy keeps in memory;
   ``describe()`` a one-line account for logs and the report.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Iterator, Mapping
from typing import Any

from ..errors import ConfigError

logger = logging.getLogger(__name__)


class ReferenceStrategy:
    """Base class of reference strategies; subclasses take their options as keyword-only ``__init__`` arguments."""

    #: registry name, set by each subclass
    name: str = ""
    #: False for strategies that produce no reference log-probabilities (``none``)
    provides_logps: bool = True

    def __init__(self) -> None:
        self.trainer: Any = None

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

    def prepare(
        self,
        policy: Any,
        *,
        ref_model: Any = None,
        peft: bool = False,
        base_weights_change: bool = False,
        needs_reference: bool = True,
    ) -> Any:
        """Before TRL's trainer exists: return the reference model TRL should hold, or ``None``."""
        if ref_model is not None:
            raise ConfigError(
                f"A ref_model was passed, but reference: {self.name} builds its own reference. Use reference: path "
                "(or auto) to train against the model you pass, or don't pass ref_model."
            )
        return None

    def setup(self, trainer: Any) -> None:
        """Once the trainer exists, before training."""
        self.trainer = trainer

    def logps(self, inputs: Mapping[str, Any]) -> tuple[Any, Any]:
        """``(ref_chosen, ref_rejected)`` summed log-probabilities for a collated batch."""
        raise NotImplementedError

    def on_step_end(self, state: Any) -> None:
        """After every optimizer step."""

    @contextlib.contextmanager
    def generation_model(self) -> Iterator[Any]:
        """The reference model the checks generate from and score with (``None``: there is none)."""
        yield None

    def memory_bytes(self) -> int:
        """Bytes of reference weights or caches this strategy keeps in memory."""
        return 0

    def describe(self) -> str:
        """One line for logs and the report."""
        return self.name


@contextlib.contextmanager
def model_for_checks(trainer: Any, source: str | None, dtype: str | None = None) -> Iterator[Any]:
    """A reference for the post-training checks when the strategy keeps none in memory.

    ``source`` (``reference_params.model``) if given, else what the policy was loaded from (its
    initial weights: a local folder or a hub id, from ``config._name_or_path``), else None. Loaded
    for the checks and freed afterwards. When it cannot be loaded (e.g. a hub id while offline),
    yields None and records why in ``trainer.checks_reference_problem`` (naming the id and the
    error), so the checks skip with that reason instead of crashing.
    """
    import gc
    import os

    from .model import load_reference_model

    trainer.checks_reference_problem = None
    policy = trainer.accelerator.unwrap_model(trainer.model)
    initial = getattr(getattr(policy, "config", None), "_name_or_path", "") or ""
    if source is None and initial:
        output_dir = getattr(trainer.args, "output_dir", None)
        if not (output_dir and os.path.realpath(os.path.expanduser(initial)) == os.path.realpath(output_dir)):
            source = initial  # a folder or a hub id; a folder holding the trained weights is not the initial model
    if source is None:
        yield None
        return
    try:
        model = load_reference_model(source, policy=policy, dtype=dtype).to(trainer.accelerator.device)
    except Exception as error:  # noqa: BLE001 -- offline hub, missing or incompatible model: the checks skip
        model = None
        trainer.checks_reference_problem = (
            f"the reference model {source!r} for the checks could not be loaded: {type(error).__name__}: {error}"
        )
        logger.warning("%s", trainer.checks_reference_problem)
    if model is None:
        yield None
        return
    try:
        yield model
    finally:
        del model
        gc.collect()


class NoReference(ReferenceStrategy):
    """No reference model, for reference-free losses (SimPO, CPO, ORPO, SFT); the checks may name one (``model``)."""

    name = "none"
    provides_logps = False

    def __init__(self, *, model: str | None = None):
        super().__init__()
        self.model = model

    def generation_model(self) -> Iterator[Any]:  # type: ignore[override]
        return model_for_checks(self.trainer, self.model)

    def prepare(self, policy: Any, *, needs_reference: bool = True, **kwargs: Any) -> Any:
        if needs_reference:
            raise ConfigError(
                "reference: none, but a chosen loss needs a reference model; choose another reference strategy "
                "or only reference-free losses."
            )
        return super().prepare(policy, **kwargs)

    def logps(self, inputs: Mapping[str, Any]) -> tuple[Any, Any]:
        return None, None

    def describe(self) -> str:
        return "none (reference-free)" + (f"; checks compare with {self.model}" if self.model else "")


def parameter_bytes(model: Any) -> int:
    """Bytes held by a module's parameters and buffers."""
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)
