"""Per-sequence log-probabilities of a collated batch: the layouts' reductions, LD-DPO and WPO.

A batch is TRL's padded ``[chosen; rejected]`` rows or a packed row (:mod:`.packing`); either way
:func:`forward_pairs` runs the model once through the host's :class:`~.heads.TokenHead` and sums the
per-token outputs over each sequence's completion tokens, as TRL 1.16's ``_compute_loss`` does
(LD-DPO's weighted sums, WPO's weights and the metric sums included; ``tests/test_trl_parity.py``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..types import PairLogps
from .attention import use_segment_attention
from .heads import METRIC_FIELDS, WPO_FIELD, TokenHead, TokenOutputs
from .packing import PACKED_KEYS, PLAN, SEGMENTED

#: Columns of a collated batch that are not model inputs.
NON_MODEL_KEYS = frozenset({"completion_mask", "ref_chosen_logps", "ref_rejected_logps"})
#: The tokenised columns of a split, and the precomputed reference columns a collator passes through.
TOKEN_COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids")
REFERENCE_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")


@dataclass(frozen=True)
class ForwardSettings:
    """What changes the log-probabilities of a batch besides the weights: LD-DPO's α, truncation, precision."""

    ld_alpha: float | None = None
    max_length: int | None = None
    truncation_mode: str = "keep_start"
    precision: str = "float32"


@dataclass
class SequenceStats:
    """Per-sequence results of one forward over ``2B`` sequences, chosen first (all ``[2B]``).

    ``logps``: summed completion log-probs (LD-DPO-weighted with ``ld_alpha``); ``plain``: the plain
    sums when they differ; ``tokens``: completion tokens; ``predicted``: completion tokens that have
    a log-prob (all but a completion's token at position 0); ``input_tokens``: the batch's tokens as
    TRL counts them (``attention_mask.sum()``). The metric sums (entropy, mean logits, top-1 hits,
    WPO's mean aligned log-prob) are set when the forward asked for them.
    """

    logps: Tensor
    plain: Tensor | None
    tokens: Tensor
    predicted: Tensor
    input_tokens: Tensor
    entropy: Tensor | None = None
    mean_logits: Tensor | None = None
    top1: Tensor | None = None
    wpo_mean: Tensor | None = None
    aux_loss: Tensor | None = None

    def pair_logps(self, ref_chosen: Tensor | None, ref_rejected: Tensor | None) -> PairLogps:
        chosen, rejected = self.logps.chunk(2)
        chosen_tokens, rejected_tokens = self.tokens.chunk(2)
        plain = self.plain.chunk(2) if self.plain is not None else (None, None)
        return PairLogps(chosen, rejected, ref_chosen, ref_rejected, chosen_tokens, rejected_tokens, *plain)

    def metric_sums(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(entropy, mean_logits, top1)`` per sequence,
        from a forward that asked for :data:`~.heads.METRIC_FIELDS`."""
        if self.entropy is None or self.mean_logits is None or self.top1 is None:
            raise ValueError("metric sums need a forward that computed the metric fields (METRIC_FIELDS)")
        return self.entropy, self.mean_logits, self.top1

    def wpo_weights(self) -> Tensor:
        """WPO pair weights ``exp(mean_t(log p_t − log Σ_v p_v²))`` of chosen × rejected (arXiv:2406.11827, Eq. 2)."""
        if self.wpo_mean is None:
            raise ValueError("WPO weights need a forward that computed log_sum_sq_probs")
        chosen, rejected = torch.exp(self.wpo_mean).chunk(2)
        return chosen * rejected


@dataclass
class Layout:
    """How one batch's per-token outputs map to its ``2B`` sequences: the reducer and the token counts.

    ``reduce`` sums a per-token field (``[B, T - 1]``, as a head returns it) over each sequence's
    completion tokens; ``tail`` marks the completion tokens past the pair's shorter completion (LD-DPO).
    """

    reduce: Callable[[Tensor], Tensor]
    tail: Tensor
    tokens: Tensor
    predicted: Tensor
    input_tokens: Tensor


def padded_layout(batch: Mapping[str, Any]) -> tuple[dict[str, Any], Layout]:
    """TRL's padded ``[chosen; rejected]`` rows: the model inputs and the per-row reduction (as ``_compute_loss``)."""
    completion_mask = batch["completion_mask"]
    model_kwargs = {k: v for k, v in batch.items() if k not in NON_MODEL_KEYS}
    model_kwargs["labels"] = batch["input_ids"].masked_fill(completion_mask == 0, -100)
    mask = completion_mask[:, 1:]
    positions = mask.cumsum(dim=1)  # LD-DPO: a token's rank within its completion, as TRL 1.16 computes it
    chosen_lens, rejected_lens = mask.sum(dim=1).long().chunk(2)
    shared = torch.minimum(chosen_lens, rejected_lens).repeat(2).unsqueeze(1).to(mask.device)
    layout = Layout(
        lambda values: (values * mask).sum(dim=1),
        positions > shared,
        completion_mask.sum(dim=1),
        mask.sum(dim=1),
        batch["attention_mask"].sum(),
    )
    return model_kwargs, layout


def packed_layout(batch: Mapping[str, Any]) -> tuple[dict[str, Any], Layout]:
    """A packed row (:mod:`.packing`): the model inputs with the segment plan, and the reduction by sequence index."""
    model_kwargs = {k: v for k, v in batch.items() if k not in PACKED_KEYS and k not in NON_MODEL_KEYS}
    model_kwargs |= {"labels": batch["packed_labels"], "attention_mask": SEGMENTED, PLAN: batch[PLAN]}
    targets = batch["completion_of"][0, 1:]
    sequences = batch["tokens"].numel()
    bins = targets.masked_fill(targets < 0, sequences)  # a position no sequence counts goes to a bin dropped after

    def reduce(values: Tensor) -> Tensor:  # one index_add, no boolean indexing (which waits for the device)
        row = values[0]
        return torch.zeros(sequences + 1, dtype=row.dtype, device=row.device).index_add(0, bins, row)[:sequences]

    tokens, predicted, input_tokens = batch["tokens"][0], batch["predicted"][0], batch["input_tokens"].sum()
    layout = Layout(reduce, batch["ld_tail"][:, 1:], tokens, predicted, input_tokens)
    return model_kwargs, layout


def forward_pairs(
    model: Any,
    batch: Mapping[str, Any],
    settings: ForwardSettings,
    head: TokenHead,
    *,
    fields: Sequence[str] = (),
    router: bool = False,
) -> SequenceStats:
    """Per-sequence log-probs of a batch (TRL's padded rows, or a packed row) through the host's head.

    ``fields``: per-token fields whose per-sequence sums are wanted too (:data:`~.heads.METRIC_FIELDS`
    for TRL's metrics, :data:`~.heads.WPO_FIELD` for WPO's weights); ``router``: ask a mixture-of-experts
    model for its load-balancing loss. Gradients flow unless the caller disables them.
    """
    if PLAN in batch:
        use_segment_attention(model)
        model_kwargs, layout = packed_layout(batch)
    else:
        model_kwargs, layout = padded_layout(batch)
    model_kwargs["use_cache"] = False
    if router:
        model_kwargs["output_router_logits"] = True
    outputs = head(model, model_kwargs, fields)
    log_probs = _per_token(outputs, "log_probs", layout)
    plain = layout.reduce(log_probs)
    ld_alpha = settings.ld_alpha
    logps = plain
    if ld_alpha is not None:
        logps = layout.reduce(log_probs * ~layout.tail) + ld_alpha * layout.reduce(log_probs * layout.tail)
    stats = SequenceStats(
        logps, None if ld_alpha is None else plain, layout.tokens, layout.predicted, layout.input_tokens
    )
    stats.aux_loss = getattr(outputs, "aux_loss", None) if fields else None  # the training forward's
    _metric_sums(stats, outputs, layout, log_probs, fields)
    return stats


def _per_token(outputs: TokenOutputs, field: str, layout: Layout) -> Tensor:
    """A per-token field at the batch's real positions (prompt-learning PEFT prepends virtual tokens)."""
    return getattr(outputs, field)[:, -layout.tail.size(1) :]


def _metric_sums(
    stats: SequenceStats, outputs: TokenOutputs, layout: Layout, log_probs: Tensor, fields: Sequence[str]
) -> None:
    if set(METRIC_FIELDS) <= set(fields):
        stats.entropy = layout.reduce(_per_token(outputs, "entropy", layout).detach())
        stats.mean_logits = layout.reduce(_per_token(outputs, "mean_logits", layout).detach())
        stats.top1 = layout.reduce(_per_token(outputs, "is_top1", layout).float())
    if WPO_FIELD in fields and outputs.log_sum_sq_probs is not None:
        with torch.no_grad():
            aligned = layout.reduce(log_probs - _per_token(outputs, WPO_FIELD, layout))
        stats.wpo_mean = aligned / stats.predicted.clamp_min(1)


def first_rows(dataset: Any, count: int) -> list[dict[str, Any]]:
    """The first ``count`` tokenised rows (:data:`TOKEN_COLUMNS`) of a split, map-style or streaming (none: [])."""
    from datasets import Dataset, IterableDataset

    if isinstance(dataset, Dataset):
        rows: list[dict[str, Any]] = (
            dataset.select(range(min(count, len(dataset)))).select_columns(TOKEN_COLUMNS).to_list()
        )
        return rows
    if isinstance(dataset, IterableDataset):
        return [{c: row[c] for c in TOKEN_COLUMNS} for row in itertools.islice(dataset, count)]
    return []


def logits_outputs(model: Any, batch: Mapping[str, Any]) -> Any:
    """The model's plain outputs (with logits) for a batch, for ``compute_metrics``; an extra forward, as TRL does."""
    with torch.no_grad():
        return model(**{k: v for k, v in batch.items() if k not in NON_MODEL_KEYS}, use_cache=False)
