"""What a post-training check receives: the models, the held-out data and how to score it."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..forward.interface import PairScores


@dataclass
class EvalContext:
    """Everything a check may use; built by :func:`~dpo_plugin.evaluation.runner.build_context` after training or by
    ``dpo-plugin evaluate``.

    ``score_pairs(which)`` scores the held-out pairs under ``"policy"`` or ``"reference"`` (None when
    the run has no reference); ``reference_model()`` is a context manager yielding the reference
    model to generate from (None when there is none); ``reference_note`` says where the reference
    comes from (e.g. the step-0 reference under TR-DPO); ``no_pairs_note`` says why the held-out
    split has no usable pairs, when it has none (e.g. every prompt fills ``max_length``).
    """

    policy: Any
    tokenizer: Any
    prompts: list[Any]
    score_pairs: Callable[[str], PairScores | None]
    reference_model: Callable[[], contextlib.AbstractContextManager[Any]]
    reference_note: str
    beta: float
    output_dir: Path
    judge: Any = None
    log_history: list[dict[str, Any]] = field(default_factory=list)
    seed: int = 0
    no_pairs_note: str | None = None
    #: Generations the checks made, reused by a later check asking for the same ones
    #: (see ``generation.cached_generate``).
    generations: dict[Any, Any] = field(default_factory=dict)

    def no_pairs_reason(self) -> str:
        """The skip reason of a check that found no usable held-out pairs."""
        return f"no usable held-out pairs: {self.no_pairs_note or 'the eval split is empty'}"

    @staticmethod
    def no_reference() -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext(None)
