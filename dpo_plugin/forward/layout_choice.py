"""The run's batch layout (``packing``): chosen once, checked against the padded layout before it is used."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from ..errors import ConfigError
from .attention import support, use_segment_attention
from .backend import Collator
from .packing import PackedCollator
from .scorer import Scorer

logger = logging.getLogger(__name__)

#: Synthetic pairs of token ids for :func:`layout_matches`: two prompts, completions of unequal lengths.
PROBE_PAIRS = (
    {"prompt_ids": [3, 5, 7, 11, 13], "chosen_ids": [17, 19], "rejected_ids": [23, 29, 31]},
    {"prompt_ids": [37, 41, 43], "chosen_ids": [47, 53, 59, 61], "rejected_ids": [67]},
)
LAYOUT_NOTES = {
    "prefix_sharing": "each pair as one segment, its prompt computed once; attention per segment, no padding",
    "padding_free": "the batch's sequences in one row without padding; attention per sequence",
}


def _on(device: torch.device, batch: dict[str, Any]) -> dict[str, Any]:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def layout_matches(scorer: Scorer, packed: PackedCollator, padded_collator: Callable[..., Collator]) -> float:
    """The largest gap, in nats per token, between packed and padded log-probs of :data:`PROBE_PAIRS`
    under the policy."""
    vocab = scorer.policy.config.get_text_config().vocab_size
    pairs = [{key: [i % vocab for i in ids] for key, ids in pair.items()} for pair in PROBE_PAIRS]
    padded = padded_collator(0)(pairs)
    reference = torch.cat(scorer.logps(_on(scorer.device, padded)))
    got = torch.cat(scorer.logps(_on(scorer.device, packed(pairs))))
    tokens = padded["completion_mask"].sum(dim=1).to(scorer.device)
    return float(((got - reference).abs().float() / tokens).max().item())


def choose_layout(
    scorer: Scorer,
    requested: str,
    *,
    padded_collator: Callable[..., Collator],
    blocked: str | None = None,
    pad_to_multiple_of: int | None = None,
) -> str:
    """Install the batch layout ``requested`` (``auto``: prefix sharing where the model takes it, on a CPU)
    on the scorer.

    ``padded_collator(pad_token_id)`` makes the host's padded collator; ``blocked`` is a reason the run
    cannot take a packed layout (e.g. a custom data collator). A packed layout is checked once against
    the padded one on :data:`PROBE_PAIRS`; with ``auto`` any obstacle falls back to the padded layout
    with a log line, with an explicit mode it is an error.
    """
    if requested == "none":
        return "none"
    mode = "prefix_sharing" if requested == "auto" else requested
    reason = blocked or support(scorer.policy)
    if reason is None and requested == "auto" and scorer.device.type != "cpu":
        reason = (
            f"the packed layouts are measured on CPUs only so far, not on {scorer.device.type}: "
            f"set packing: {mode} to use them"
        )
    settings = scorer.settings
    pad = scorer.tokenizer.pad_token_id or 0
    packed = PackedCollator(mode, pad, settings.max_length, settings.truncation_mode, pad_to_multiple_of)
    if reason is None:
        use_segment_attention(scorer.policy)
        gap = layout_matches(scorer, packed, padded_collator)
        tolerance = 1e-3 if scorer.dtype == torch.float32 and settings.precision == "float32" else 5e-2
        if not gap <= tolerance:
            reason = f"its packed log-probs differ from the padded ones by {gap:.3g} nats per token"
    if reason is not None:
        if requested != "auto":
            raise ConfigError(f"packing: {requested} cannot be used with this model: {reason}. Use packing: none.")
        logger.info("packing: auto → none (padded [chosen; rejected] rows, as TRL): %s.", reason)
        return "none"
    scorer.collator = packed
    logger.info("packing: %s → %s (%s).", requested, mode, LAYOUT_NOTES[mode])
    return mode
