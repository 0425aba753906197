"""Packed DPO batches: padding-free and prefix-shared rows, and the segment plan of each row.

TRL pads every ``[chosen; rejected]`` sequence to the batch's longest and runs each pair's prompt
twice. Here the batch's sequences go into one row without padding, each with its own positions:

- ``padding_free``: the ``2B`` sequences ``[prompt_i, chosen_i]`` and ``[prompt_i, rejected_i]``
  one after the other, positions restarting at 0 for each.
- ``prefix_sharing`` (Wang & Hegde 2024, arXiv:2410.20305): each pair as one segment
  ``[prompt, chosen, p', rejected]`` whose prompt runs once. ``p'`` repeats the prompt's last
  token at that token's position and takes its place for the rejected branch: ``p'`` and the
  rejected tokens attend to the prompt without its last token, to ``p'`` and to themselves (never
  to the chosen branch), positions continuing from the prompt's end. So the rejected tokens see
  exactly the context the padded layout gives them and are predicted from ``p'`` as TRL's label
  shift predicts them from the prompt's last token. A pair whose truncated sequences do not share
  their prompt (``keep_end`` cutting into it) is packed as two sequences.

Truncation is TRL 1.16's ``DataCollatorForPreference``'s, per sequence, before packing. The row's
:class:`SegmentPlan` says which positions attend to which; :mod:`.segment_kernels` computes it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

#: The model keyword that carries a batch's :class:`SegmentPlan` down to the attention layers.
PLAN = "dpo_plugin_segments"
MODES = ("padding_free", "prefix_sharing")
#: Batch keys of a packed batch that are not model inputs.
PACKED_KEYS = frozenset({PLAN, "packed_labels", "completion_of", "ld_tail", "tokens", "predicted", "input_tokens"})


@dataclass(frozen=True)
class Job:
    """One segment's attention: queries ``[start, end)`` of the row over the keys ``ranges``
    (the last one ends at ``end``), causal from the lower right."""

    start: int
    end: int
    ranges: tuple[tuple[int, int], ...]

    @property
    def keys(self) -> int:
        return sum(b - a for a, b in self.ranges)


@dataclass
class SegmentPlan:
    """The segments of a packed row, in row order, covering every position, and the attention kernel computing them.

    What a kernel derives from the plan on a device (index tensors, a block mask) is built at the
    first layer that needs it and kept for the others, the reference forward and the backward
    (:meth:`prepared`); see :mod:`.segment_kernels`.
    """

    jobs: tuple[Job, ...]
    kernel: str = "sdpa"
    _prepared: dict[tuple[str, str], Any] = field(default_factory=dict, repr=False)

    def prepared(self, name: str, device: torch.device, build: Callable[[], Any]) -> Any:
        """``build()`` the first time ``name`` is asked for on ``device``; the same object after."""
        key = (name, str(device))
        if key not in self._prepared:
            self._prepared[key] = build()
        return self._prepared[key]


#: The attention mask a packed forward passes: 4D, so transformers builds none (the plan says who attends to whom).
SEGMENTED = torch.ones(1, 1, 1, 1, dtype=torch.bool)


@dataclass(frozen=True)
class PackedCollator:
    """Collates tokenised pairs into one packed row (:func:`pack`), padded to a multiple of ``pad_to_multiple_of``,
    its attention computed by ``kernel`` (:data:`~.segment_kernels.KERNELS`)."""

    mode: str
    pad_token_id: int
    max_length: int | None = None
    truncation_mode: str = "keep_start"
    pad_to_multiple_of: int | None = None
    kernel: str = "sdpa"

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        return pack(
            examples,
            max_length=self.max_length,
            truncation_mode=self.truncation_mode,
            share_prompt=self.mode == "prefix_sharing",
            pad_token_id=self.pad_token_id,
            pad_to_multiple_of=self.pad_to_multiple_of,
            kernel=self.kernel,
        )


def truncate(
    prompt: list[int], completion: list[int], max_length: int | None, mode: str
) -> tuple[list[int], list[int]]:
    """``(prompt part, completion part)`` of ``prompt + completion`` truncated as TRL's collator truncates it."""
    if max_length is None or len(prompt) + len(completion) <= max_length:
        return prompt, completion
    if mode == "keep_start":
        return prompt[:max_length], completion[: max(0, max_length - len(prompt))]
    if mode == "keep_end":
        cut = len(prompt) + len(completion) - max_length
        return prompt[cut:], completion[max(0, cut - len(prompt)) :]
    raise ValueError(f"Unsupported truncation mode: {mode}, expected 'keep_start' or 'keep_end'")


class _Row:
    """A packed row being built: tokens, positions, segments, and which sequence each completion token belongs to."""

    def __init__(self, sequences: int):
        self.ids: list[int] = []
        self.positions: list[int] = []
        self.completion_of: list[int] = []  # the sequence of a counted completion token, else -1
        self.jobs: list[Job] = []
        self.tokens = [0] * sequences
        self.predicted = [0] * sequences

    @property
    def segment_start(self) -> int:
        return self.jobs[-1].end if self.jobs else 0

    def add(self, ids: Sequence[int], first_position: int, sequence: int | None = None) -> None:
        """Append ``ids`` from ``first_position`` on; as the completion of ``sequence`` when given.

        A completion token is counted, and has a label, unless it opens its segment (nothing predicts it).
        """
        start = len(self.ids)
        self.ids += ids
        self.positions += range(first_position, first_position + len(ids))
        if sequence is None:
            self.completion_of += [-1] * len(ids)
            return
        labelled = [sequence if start + i > self.segment_start else -1 for i in range(len(ids))]
        self.completion_of += labelled
        self.tokens[sequence] += len(ids)
        self.predicted[sequence] += sum(1 for s in labelled if s >= 0)

    def segment(self, ranges: tuple[tuple[int, int], ...] | None = None) -> None:
        """Close the segment from the last boundary to here, attending to ``ranges`` (default: itself, causally)."""
        start, end = self.segment_start, len(self.ids)
        if end > start:
            self.jobs.append(Job(start, end, ranges or ((start, end),)))


def pack(
    examples: Sequence[dict[str, Any]],
    *,
    max_length: int | None,
    truncation_mode: str,
    share_prompt: bool,
    pad_token_id: int = 0,
    pad_to_multiple_of: int | None = None,
    kernel: str = "sdpa",
) -> dict[str, Any]:
    """A packed batch of ``B`` tokenised pairs (``prompt_ids``, ``chosen_ids``, ``rejected_ids``): one row, no padding.

    Sequence ``i`` is pair ``i``'s chosen answer, ``B + i`` its rejected one. Keys: ``input_ids``,
    ``position_ids`` and ``packed_labels`` ``[1, T]``, ``completion_of`` ``[1, T]`` (the sequence of
    each counted completion token, else -1), ``ld_tail`` ``[1, T]`` (completion tokens past the
    shorter completion, for LD-DPO), ``tokens`` / ``predicted`` ``[1, 2B]`` (completion tokens, and those
    with a log-prob), ``input_tokens`` ``[1]`` (the tokens TRL's padded batch would hold) and the plan.
    Every tensor leads with the row's dimension, so accelerate's dispatcher (a streaming split's
    batches) takes the batch whole. With ``pad_to_multiple_of`` the row ends in a segment of
    ``pad_token_id`` that nothing reads.
    """
    count = len(examples)
    row = _Row(2 * count)
    input_tokens = 0
    for i, example in enumerate(examples):
        prompt = list(example["prompt_ids"])
        chosen_prompt, chosen = truncate(prompt, list(example["chosen_ids"]), max_length, truncation_mode)
        rejected_prompt, rejected = truncate(prompt, list(example["rejected_ids"]), max_length, truncation_mode)
        input_tokens += len(chosen_prompt) + len(chosen) + len(rejected_prompt) + len(rejected)
        if share_prompt and chosen_prompt == rejected_prompt and chosen_prompt:
            _add_shared(row, chosen_prompt, chosen, rejected, i, count + i)
        else:
            for sequence, (part, completion) in (
                (i, (chosen_prompt, chosen)),
                (count + i, (rejected_prompt, rejected)),
            ):
                row.add(part, 0)
                row.add(completion, len(part), sequence)
                row.segment()
    if pad_to_multiple_of:
        row.add([pad_token_id] * (-len(row.ids) % pad_to_multiple_of), 0)
        row.segment()
    batch = _tensors(row, count)
    batch[PLAN] = SegmentPlan(tuple(row.jobs), kernel)
    batch["input_tokens"] = torch.tensor([input_tokens])
    for column in ("ref_chosen_logps", "ref_rejected_logps"):
        if column in examples[0]:
            batch[column] = torch.tensor([example[column] for example in examples])
    return batch


def _add_shared(row: _Row, prompt: list[int], chosen: list[int], rejected: list[int], first: int, second: int) -> None:
    """``[prompt, chosen]`` as one causal segment, then ``[p', rejected]`` over the prompt (less its last token)
    and itself."""
    start = len(row.ids)
    row.add(prompt, 0)
    row.add(chosen, len(prompt), first)
    row.segment()
    branch = len(row.ids)
    row.add(prompt[-1:], len(prompt) - 1)
    row.add(rejected, len(prompt), second)
    row.segment(((start, start + len(prompt) - 1), (branch, len(row.ids))))


def _tensors(row: _Row, count: int) -> dict[str, Any]:
    ids = torch.tensor([row.ids])
    completion_of = torch.tensor([row.completion_of])
    sequence = completion_of[0]
    counted = sequence >= 0
    # LD-DPO: a completion token's rank within its sequence's counted tokens, past the pair's shorter count
    ranks = torch.zeros_like(sequence)
    order = torch.argsort(torch.where(counted, sequence, 2 * count), stable=True)[: int(counted.sum())]
    predicted = torch.tensor(row.predicted)
    starts = torch.cumsum(predicted, 0) - predicted
    ranks[order] = torch.arange(len(order)) - starts[sequence[order]] + 1
    shorter = torch.minimum(predicted[:count], predicted[count:]).repeat(2)
    limit = torch.where(counted, shorter[sequence.clamp(min=0)], 0)
    return {
        "input_ids": ids,
        "position_ids": torch.tensor([row.positions]),
        "packed_labels": ids.masked_fill(completion_of < 0, -100),
        "completion_of": completion_of,
        "ld_tail": (counted & (ranks > limit))[None],
        "tokens": torch.tensor([row.tokens]),
        "predicted": predicted[None],
    }
