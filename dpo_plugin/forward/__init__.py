"""The forward seam: sequence log-probabilities of preference pairs, in the run's batch layout, for any host.

- :mod:`.interface`: :class:`PairScorer` and :class:`PairScores`, what strategies and checks see;
- :mod:`.scorer`: the :class:`~.scorer.Scorer` implementing it, and :func:`pair_scorer` for a model without a trainer;
- :mod:`.logps`: a batch's per-sequence log-probabilities (padded or packed layout, LD-DPO, WPO);
- :mod:`.heads`: the per-token head a host lends (TRL's fused LM head, or full logits);
- :mod:`.backend`: what a host lends the forward (head, padded collator, tokenisation);
- :mod:`.packing`, :mod:`.attention`, :mod:`.segment_kernels`: packed rows and their attention (the kernels);
- :mod:`.layout_choice`, :mod:`.layout_cost`: the layout checked and weighed by cost (``packing: auto``);
- :mod:`.engine`: where scoring runs (device, precision, processes).
"""

from __future__ import annotations

from typing import Any

from .interface import PairScorer, PairScores

__all__ = ["PairScorer", "PairScores", "pair_scorer"]


def __getattr__(name: str) -> Any:
    if name == "pair_scorer":  # imports torch: only when used
        from .scorer import pair_scorer

        return pair_scorer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
