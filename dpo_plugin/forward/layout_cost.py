"""What a batch layout costs a run: an estimate from the data's token counts and the model's width, and a timing.

The estimate counts, per batch of the run's first rows (truncated as the collators truncate them):

- the positions through the model body: TRL's padded rows hold ``2B × longest`` positions, a packed
  row its real tokens (prefix sharing: each prompt once, plus one repeated token per pair);
- the positions through the LM head: every position on a CPU (TRL's fused head compacts to the
  scored tokens only on Triton devices, where both layouts score the same tokens);
- the query-key pairs of attention (padded rows: ``2B × longest²``, their padding mask keeps
  SDPA from skipping the upper triangle, or ``2B × longest²/2`` when no row is padded; packed:
  ``length²/2`` per causal sequence of a length bucket, :mod:`.segment_kernels`) and the attention
  calls per layer (one; one per bucket);

and weighs them in floating-point operations: ``2 × parameters per layer`` per position and layer,
``2 × hidden × vocabulary`` per head position, ``4 × heads × head_dim`` per pair and layer, and a
fixed :data:`~.segment_kernels.CALL_COST` per call — times three for a training step (forward and
backward), plus one per no-gradient reference forward. It is blind to what does not scale with
tokens (kernel launches, Python), so :func:`time_layouts` measures the two layouts on a real batch
wherever the estimate cannot settle it (:mod:`.layout_choice`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .heads import METRIC_FIELDS
from .logps import ForwardSettings, forward_pairs
from .packing import PLAN, pack, truncate
from .segment_kernels import CALL_COST, length_buckets


@dataclass(frozen=True)
class ModelShape:
    """The sizes that set a causal LM's cost per position (from its text config)."""

    hidden: int
    layers: int
    intermediate: int
    vocab: int
    heads: int
    kv_heads: int
    head_dim: int

    @classmethod
    def of(cls, config: Any) -> ModelShape:
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        hidden = int(getattr(text, "hidden_size", 0) or 0) or 768
        heads = int(getattr(text, "num_attention_heads", 0) or 0) or 12
        return cls(
            hidden=hidden,
            layers=int(getattr(text, "num_hidden_layers", 0) or 0) or 12,
            intermediate=int(getattr(text, "intermediate_size", 0) or 0) or 4 * hidden,
            vocab=int(getattr(text, "vocab_size", 0) or 0) or 32000,
            heads=heads,
            kv_heads=int(getattr(text, "num_key_value_heads", 0) or 0) or heads,
            head_dim=int(getattr(text, "head_dim", 0) or 0) or hidden // heads,
        )

    @property
    def layer_flops(self) -> float:
        """Forward FLOPs per position and layer: the attention projections and a gated MLP (2 × their weights)."""
        projections = self.hidden * self.head_dim * (2 * self.heads + 2 * self.kv_heads)
        return 2.0 * (projections + 3 * self.hidden * self.intermediate)


@dataclass(frozen=True)
class BatchCost:
    """One batch in one layout: positions through the body and the head, attention pairs and calls per layer."""

    body: int
    head: int
    pairs: float
    calls: int
    real: int

    def flops(self, shape: ModelShape) -> float:
        """Forward FLOPs (with a call's fixed cost as :data:`~.segment_kernels.CALL_COST` FLOP-equivalents × 4)."""
        width = shape.heads * shape.head_dim
        attention = 4.0 * width * self.pairs + 4.0 * CALL_COST * self.calls
        return (
            self.body * shape.layer_flops * shape.layers
            + self.head * 2.0 * shape.hidden * shape.vocab
            + (shape.layers * attention)
        )


def padded_cost(rows: Sequence[dict[str, Any]], settings: ForwardSettings, compact_head: bool) -> BatchCost:
    """TRL's padded ``[chosen; rejected]`` rows of ``rows`` (one batch)."""
    lengths, scored = [], 0
    for row in rows:
        for completion in (row["chosen_ids"], row["rejected_ids"]):
            prompt, kept = truncate(
                list(row["prompt_ids"]), list(completion), settings.max_length, settings.truncation_mode
            )
            lengths.append(len(prompt) + len(kept))
            scored += len(kept)
    longest = max(lengths, default=0)
    body = len(lengths) * longest
    square = 1.0 if any(length < longest for length in lengths) else 0.5  # a padding mask keeps SDPA on the square
    return BatchCost(body, scored if compact_head else body, square * len(lengths) * longest**2, 1, sum(lengths))


def packed_cost(
    rows: Sequence[dict[str, Any]], settings: ForwardSettings, compact_head: bool, *, share_prompt: bool, width: int
) -> BatchCost:
    """The packed row of ``rows`` (one batch): its positions, and its sequences in length buckets."""
    batch = pack(
        rows, max_length=settings.max_length, truncation_mode=settings.truncation_mode, share_prompt=share_prompt
    )
    lengths = [job.keys for job in batch[PLAN].jobs]
    buckets = length_buckets(lengths, CALL_COST / width)
    pairs = sum(len(b) * max(lengths[j] for j in b) ** 2 / 2 for b in buckets)
    body = int(batch["input_ids"].numel())
    scored = int(batch["tokens"].sum())
    return BatchCost(
        body, scored if compact_head else body, float(pairs), len(buckets), int(batch["input_tokens"].sum())
    )


@dataclass(frozen=True)
class Estimate:
    """Both layouts' cost over ``batches`` sampled batches, in forward-FLOP equivalents, and the counts behind it."""

    padded: float
    packed: float
    padded_positions: int
    packed_positions: int
    real_tokens: int
    batches: int

    @property
    def ratio(self) -> float:
        """packed / padded (below 1: the packed layout is estimated cheaper)."""
        return self.packed / self.padded if self.padded else 1.0


def estimate(
    rows: Sequence[dict[str, Any]],
    batch_size: int,
    shape: ModelShape,
    settings: ForwardSettings,
    *,
    share_prompt: bool,
    compact_head: bool,
    passes: float,
) -> Estimate:
    """Both layouts over ``rows`` in batches of ``batch_size`` (``passes``: forward equivalents per step)."""
    batches = [rows[i : i + batch_size] for i in range(0, len(rows), max(batch_size, 1))]
    width = shape.heads * shape.head_dim
    padded = [padded_cost(b, settings, compact_head) for b in batches]
    packed = [packed_cost(b, settings, compact_head, share_prompt=share_prompt, width=width) for b in batches]
    return Estimate(
        passes * sum(c.flops(shape) for c in padded),
        passes * sum(c.flops(shape) for c in packed),
        sum(c.body for c in padded),
        sum(c.body for c in packed),
        sum(c.real for c in padded),
        len(batches),
    )


def time_layouts(
    model: Any,
    batches: Mapping[str, Mapping[str, Any]],
    settings: ForwardSettings,
    head: Any,
    *,
    context: Callable[[], Any],
    backward: bool,
    reference_forwards: int,
    repeats: int = 2,
) -> dict[str, float]:
    """Seconds of one step of each layout's batch (the least of ``repeats``, interleaved, after one warm-up each).

    A step: the policy's forward as training runs it (its metric fields), a backward when
    ``backward`` (the gradients it leaves are removed: the parameters' ``.grad`` are restored), and
    ``reference_forwards`` forwards without gradients (the policy's, as a stand-in). ``context`` makes
    the forward's context (the engine's autocast); the random state is restored after.
    """
    parameters = [p for p in model.parameters() if p.requires_grad]
    saved = [p.grad for p in parameters]
    for parameter in parameters:  # a backward accumulates in place: the saved gradients must not see it
        parameter.grad = None
    best = {name: float("inf") for name in batches}
    device = next(model.parameters()).device
    try:
        with torch.random.fork_rng(
            devices=[device] if device.type == "cuda" else []
        ):  # dropout draws nothing of the run's
            for repeat in range(repeats + 1):
                for name, batch in batches.items():
                    seconds = _step_seconds(model, batch, settings, head, context, backward, reference_forwards)
                    if repeat:  # the first round warms up
                        best[name] = min(best[name], seconds)
    finally:
        for parameter, grad in zip(parameters, saved, strict=True):
            parameter.grad = grad
    return best


def _step_seconds(
    model: Any,
    batch: Mapping[str, Any],
    settings: ForwardSettings,
    head: Any,
    context: Callable[[], Any],
    backward: bool,
    reference_forwards: int,
) -> float:
    device = next(model.parameters()).device
    _synchronize(device)
    started = time.perf_counter()
    with context():
        stats = forward_pairs(model, batch, settings, head, fields=METRIC_FIELDS if backward else ())
    if backward and stats.logps.requires_grad:
        stats.logps.float().sum().backward()
    with torch.no_grad(), context():
        for _ in range(reference_forwards):
            forward_pairs(model, batch, settings, head)
    _synchronize(device)
    return time.perf_counter() - started


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
