"""The run's batch layout (``packing``): checked against the padded layout, and weighed by cost, before it is used.

``auto`` packs by prefix sharing only where that is cheaper for this run: :mod:`.layout_cost`
estimates both layouts from the run's first rows and the model's width, and where the estimate
cannot settle it (between :data:`CLEAR_WIN` and :data:`CLEAR_LOSS`, or a step so small that fixed
costs the estimate does not see may decide) both are timed on the run's first batch. An explicit
packed layout is always honoured; when the timing finds it slower, a warning says by how much.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import ConfigError
from .attention import support, use_segment_attention
from .backend import Collator
from .layout_cost import Estimate, ModelShape, estimate, time_layouts
from .packing import PackedCollator
from .scorer import Scorer
from .segment_kernels import kernels_for

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
#: Estimated packed/padded cost ratios at or below which packing is taken, and at or above which it is not,
#: without timing; in between, both are timed on the run's first batch (:func:`weigh`).
CLEAR_WIN, CLEAR_LOSS = 0.6, 1.1
#: Without timing (several processes), a close estimate packs only below this ratio.
UNTIMED_WIN = 0.8
#: A padded step estimated under this many seconds is timed whatever the estimate (the timing then costs little).
QUICK_STEP_S = 0.5
#: Forward FLOPs per second assumed to turn the estimate into seconds (only to tell a quick step).
DEVICE_FLOPS = {"cpu": 5e10, "cuda": 1e14}
#: The run's first rows read for the estimate: this many batches at most.
ESTIMATE_BATCHES = 16


@dataclass(frozen=True)
class Workload:
    """What a layout is weighed on: the run's first tokenised rows, its batch size, and what a step runs.

    ``rows``: pairs (``prompt_ids``, ``chosen_ids``, ``rejected_ids``) in the order the run meets them;
    ``training``: a step runs a backward; ``reference_forwards``: forwards without gradients per step
    besides the policy's (a reference scored per batch); ``may_time``: the layouts may be timed (not
    when several processes would each decide alone).
    """

    rows: Sequence[dict[str, Any]]
    batch_size: int
    training: bool = True
    reference_forwards: int = 0
    may_time: bool = True

    @property
    def passes(self) -> float:
        return (3.0 if self.training else 1.0) + self.reference_forwards


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


def checked_collator(
    scorer: Scorer, mode: str, padded_collator: Callable[..., Collator], pad_to_multiple_of: int | None
) -> tuple[PackedCollator | None, str | None]:
    """The packed collator of ``mode`` with the first attention kernel that matches the padded layout on the
    probe pairs, or why none does."""
    use_segment_attention(scorer.policy)
    settings = scorer.settings
    pad = scorer.tokenizer.pad_token_id or 0
    tolerance = 1e-3 if scorer.dtype == torch.float32 and settings.precision == "float32" else 5e-2
    reasons = []
    for kernel in kernels_for(scorer.device):
        packed = PackedCollator(mode, pad, settings.max_length, settings.truncation_mode, pad_to_multiple_of, kernel)
        try:
            gap = layout_matches(scorer, packed, padded_collator)
        except Exception as error:  # noqa: BLE001 -- a kernel this device or dtype cannot run: try the next
            reasons.append(f"the {kernel} kernel raised {type(error).__name__}: {error}")
            continue
        if gap <= tolerance:
            for reason in reasons:
                logger.info("packing: %s; using the %s kernel.", reason, kernel)
            return packed, None
        reasons.append(f"its packed log-probs differ from the padded ones by {gap:.3g} nats per token ({kernel})")
    return None, "; ".join(reasons)


def weigh(scorer: Scorer, packed: PackedCollator, workload: Workload) -> tuple[bool | None, str]:
    """Whether ``packed`` is the cheaper layout for the run (None: no rows to tell), and why, for the log.

    Called while ``scorer.collator`` is still the run's padded collator (the host's, with its truncation).
    """
    rows = list(workload.rows)
    if not rows:
        return None, "no training rows to weigh the layouts on"
    found = _estimate(scorer, packed, rows, workload)
    why = (
        f"estimated {found.ratio:.2f}× the padded step's cost: {found.packed_positions / found.real_tokens:.2f} "
        f"against {found.padded_positions / found.real_tokens:.2f} positions per real token"
    )
    quick = found.padded / found.batches / DEVICE_FLOPS.get(scorer.device.type, 1e12) < QUICK_STEP_S
    if not (CLEAR_WIN < found.ratio < CLEAR_LOSS or quick):
        return found.ratio <= CLEAR_WIN, why
    if not workload.may_time:
        return found.ratio < UNTIMED_WIN, why + " (not timed: several processes)"
    first = rows[: workload.batch_size]
    batches = {"none": scorer.collator(first), packed.mode: packed(first)}  # the run's padded collator, as yet
    seconds = time_layouts(
        scorer.policy,
        {name: _on(scorer.device, batch) for name, batch in batches.items()},
        scorer.settings,
        scorer.head,
        context=scorer.engine.autocast,
        backward=workload.training,
        reference_forwards=workload.reference_forwards,
    )
    ratio = seconds[packed.mode] / seconds["none"]
    measured = (
        f"measured {ratio:.2f}× on the run's first batch ({seconds[packed.mode] * 1e3:.0f} ms against "
        f"{seconds['none'] * 1e3:.0f} ms padded)"
    )
    return ratio < 1, f"{why}; {measured}"


def _estimate(scorer: Scorer, packed: PackedCollator, rows: list[Any], workload: Workload) -> Estimate:
    return estimate(
        rows[: workload.batch_size * ESTIMATE_BATCHES],
        workload.batch_size,
        ModelShape.of(scorer.policy.config),
        scorer.settings,
        share_prompt=packed.mode == "prefix_sharing",
        compact_head=scorer.device.type == "cuda",
        passes=workload.passes,
    )


def choose_layout(
    scorer: Scorer,
    requested: str,
    *,
    padded_collator: Callable[..., Collator],
    blocked: str | None = None,
    pad_to_multiple_of: int | None = None,
    workload: Workload | None = None,
) -> str:
    """Install the batch layout ``requested`` on the scorer (``auto``: prefix sharing where the model takes it and
    it is the cheaper for ``workload``; see the module docstring).

    ``padded_collator(pad_token_id)`` makes the host's padded collator; ``blocked`` is a reason the run
    cannot take a packed layout (e.g. a custom data collator). A packed layout is checked once against
    the padded one on :data:`PROBE_PAIRS`; with ``auto`` any obstacle, or a higher cost, falls back to
    the padded layout with a log line; with an explicit mode an obstacle is an error.
    """
    if requested == "none":
        return "none"
    mode = "prefix_sharing" if requested == "auto" else requested
    reason = blocked or support(scorer.policy)
    packed, why = None, ""
    if reason is None:
        packed, reason = checked_collator(scorer, mode, padded_collator, pad_to_multiple_of)
    if packed is not None and workload is not None:
        faster, why = weigh(scorer, packed, workload)
        if requested == "auto" and not faster:
            reason = why
        elif faster is False:
            logger.warning("packing: %s is kept as set, though it looks slower than packing: none here: %s.", mode, why)
    if packed is None or reason is not None:
        if requested != "auto":
            raise ConfigError(f"packing: {requested} cannot be used with this model: {reason}. Use packing: none.")
        logger.info("packing: auto → none (padded [chosen; rejected] rows, as TRL): %s.", reason)
        return "none"
    scorer.collator = packed
    details = f"{LAYOUT_NOTES[mode]}, {packed.kernel} kernel" + (f"; {why}" if why else "")
    logger.info("packing: %s → %s (%s).", requested, mode, details)
    return mode
