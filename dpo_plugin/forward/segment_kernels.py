"""A packed row's attention: every segment as one causal sequence over its keys, computed by one of three kernels.

Job ``j`` of a :class:`~.packing.SegmentPlan` (queries ``[start, end)`` over the key ranges
``ranges``, causal from the lower right) is computed as one causal sequence over its keys' row
positions; its last ``end − start`` outputs are the job's. A square segment is its own sequence; a
prefix-shared rejected branch ``[p', rejected]`` becomes ``[prompt less its last token, p',
rejected]``, whose first rows (the prompt's again) are computed and dropped. So every kernel only
needs causal attention over variable-length sequences, with no mask:

- ``sdpa`` (any device, gradients included): the sequences grouped into length buckets, each
  padded on the right to its longest (``is_causal`` keeps every real row off the padding), one SDPA
  call per bucket; :func:`length_buckets` picks the grouping that minimises the padded attention
  work plus a fixed cost per call.
- ``varlen`` (CUDA): flash attention over the concatenated sequences (``cu_seqlens``): torch's
  ``varlen_attn``, or the ``flash_attn`` package where installed.
- ``flex`` (CUDA): ``flex_attention`` over the concatenated sequences padded to a multiple of 128,
  with a document-causal block mask, compiled once per process (the first call's compile time is
  logged); on a CPU it runs eagerly and forward only (torch has no CPU backward for it).

The gather and scatter index tensors (and the block mask) are built once per plan and device, at
the first layer, and reused by every layer, the reference forward and the backward.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from .packing import SegmentPlan

logger = logging.getLogger(__name__)

#: The fixed cost of one attention call, in units of one query-key pair times ``heads × head_dim``
#: (about 0.1 ms forward and backward on a CPU core against ~0.1 ns per unit; measured on the toy model).
CALL_COST = 2**19
#: flex_attention's sequence length is padded to a multiple of its block size.
FLEX_BLOCK = 128


def length_buckets(lengths: Sequence[int], call_cost: float) -> list[list[int]]:
    """Indices of ``lengths`` grouped so that Σ over groups of (size × longest² / 2 + ``call_cost``) is least.

    Each group is padded to its longest member and computed in one causal call: the cost counts
    the padded query-key pairs and a fixed cost per call. Exact over groups of consecutive lengths
    in sorted order (an optimal grouping has that form), by dynamic programming in O(n²).
    """
    order = sorted(range(len(lengths)), key=lambda index: lengths[index])
    best = [0.0] + [float("inf")] * len(order)
    cut = [0] * (len(order) + 1)
    for end in range(1, len(order) + 1):
        longest = lengths[order[end - 1]]
        for start in range(end):
            cost = best[start] + (end - start) * longest * longest / 2 + call_cost
            if cost < best[end]:
                best[end], cut[end] = cost, start
    groups, end = [], len(order)
    while end:
        groups.append(order[cut[end] : end])
        end = cut[end]
    return groups[::-1]


@dataclass(frozen=True)
class Gathered:
    """A plan's sequences laid out for a kernel on one device.

    ``index`` ``[S]``: the row position of each element, the sequences one after another in
    groups of ``shapes`` ``(count, length)`` (each sequence right-padded to its group's length with
    position 0); ``output`` ``[T]``: where each row position's output is among the ``S`` elements.
    """

    index: Tensor
    shapes: tuple[tuple[int, int], ...]
    output: Tensor

    @functools.cached_property
    def cu_seqlens(self) -> Tensor:
        """Cumulative sequence starts ``[N + 1]`` (int32), for groups of one unpadded sequence each (built once:
        every layer reads it)."""
        lengths = torch.tensor([0] + [length for _, length in self.shapes], dtype=torch.int32)
        return lengths.cumsum(0, dtype=torch.int32).to(self.index.device)


def gathered(plan: SegmentPlan, groups: Sequence[Sequence[int]], device: torch.device, multiple: int = 1) -> Gathered:
    """The plan's jobs as causal sequences in ``groups`` (of job indices), padded to a multiple of ``multiple``."""
    keys = [torch.cat([torch.arange(a, b) for a, b in job.ranges]) for job in plan.jobs]
    rows = plan.jobs[-1].end
    output = torch.empty(rows, dtype=torch.long)
    parts, shapes, offset = [], [], 0
    for group in groups:
        length = max(len(keys[j]) for j in group)
        for slot, j in enumerate(group):
            job = plan.jobs[j]
            parts.append(torch.nn.functional.pad(keys[j], (0, length - len(keys[j]))))
            first = offset + slot * length + len(keys[j]) - (job.end - job.start)
            output[job.start : job.end] = torch.arange(first, first + job.end - job.start)
        shapes.append((len(group), length))
        offset += len(group) * length
    parts.append(torch.zeros(-offset % multiple, dtype=torch.long))
    return Gathered(torch.cat(parts).to(device), tuple(shapes), output.to(device))


def _sdpa(module: Any, query: Tensor, key: Tensor, value: Tensor, plan: SegmentPlan, **kwargs: Any) -> Tensor:
    """Length buckets, one right-padded causal SDPA call each (transformers' SDPA: GQA, dropout, scaling)."""
    width = query.shape[1] * query.shape[-1]

    def build() -> Gathered:
        groups = length_buckets([job.keys for job in plan.jobs], CALL_COST / width)
        return gathered(plan, groups, query.device)

    layout: Gathered = plan.prepared(f"sdpa-{width}", query.device, build)
    kwargs = {**kwargs, "is_causal": True}
    q, k, v = (t[0].index_select(1, layout.index) for t in (query, key, value))  # [heads, S, head_dim]
    outputs, start = [], 0
    for count, length in layout.shapes:
        rows = slice(start, start + count * length)
        qb, kb, vb = (t[:, rows].unflatten(1, (count, length)).transpose(0, 1) for t in (q, k, v))
        out, _ = sdpa_attention_forward(module, qb, kb, vb, None, **kwargs)  # [count, length, heads, head_dim]
        outputs.append(out.flatten(0, 1))
        start += count * length
    return torch.cat(outputs).index_select(0, layout.output)[None]


def _concatenated(plan: SegmentPlan, device: torch.device, multiple: int = 1) -> Gathered:
    return gathered(plan, [[j] for j in range(len(plan.jobs))], device, multiple)


def _varlen(module: Any, query: Tensor, key: Tensor, value: Tensor, plan: SegmentPlan, **kwargs: Any) -> Tensor:
    """Flash attention over the concatenated sequences (``cu_seqlens``), causal."""
    layout: Gathered = plan.prepared("varlen", query.device, lambda: _concatenated(plan, query.device))
    q, k, v = (t[0].index_select(1, layout.index).transpose(0, 1).contiguous() for t in (query, key, value))
    longest = max(length for _, length in layout.shapes)
    out = varlen_function()(q, k, v, layout.cu_seqlens, longest, kwargs.get("scaling"))  # [S, heads, dim]
    return out.index_select(0, layout.output)[None]


@functools.cache
def varlen_function() -> Callable[..., Tensor]:
    """``(q, k, v, cu_seqlens, longest, scale) → out``: torch's ``varlen_attn``, else ``flash_attn``'s (ImportError)."""
    try:
        from torch.nn.attention.varlen import varlen_attn as function
    except ImportError:
        from flash_attn import flash_attn_varlen_func

        def flash(q: Tensor, k: Tensor, v: Tensor, cu: Tensor, longest: int, scale: float | None) -> Tensor:
            return flash_attn_varlen_func(q, k, v, cu, cu, longest, longest, softmax_scale=scale, causal=True)

        return flash
    varlen_attn: Any = function
    takes = inspect.signature(varlen_attn).parameters
    causal = {"window_size": (-1, 0)} if "window_size" in takes else {"is_causal": True}

    def native(q: Tensor, k: Tensor, v: Tensor, cu: Tensor, longest: int, scale: float | None) -> Tensor:
        if q.shape[1] != k.shape[1] and "enable_gqa" not in takes:
            k, v = (t.repeat_interleave(q.shape[1] // k.shape[1], dim=1) for t in (k, v))
        gqa = {"enable_gqa": q.shape[1] != k.shape[1]} if "enable_gqa" in takes else {}
        out: Tensor = varlen_attn(q, k, v, cu, cu, longest, longest, scale=scale, **causal, **gqa)
        return out

    return native


@dataclass(frozen=True)
class FlexLayout:
    gathered: Gathered
    block_mask: Any


def _flex_layout(plan: SegmentPlan, device: torch.device) -> FlexLayout:
    from torch.nn.attention.flex_attention import create_block_mask

    layout = _concatenated(plan, device, FLEX_BLOCK)
    size = layout.index.numel()
    document = torch.full((size,), len(layout.shapes), dtype=torch.int32)  # the padding: a document of its own
    document[: sum(length for _, length in layout.shapes)] = torch.repeat_interleave(
        torch.arange(len(layout.shapes), dtype=torch.int32), torch.tensor([length for _, length in layout.shapes])
    )
    document = document.to(device)

    def causal_within(batch: Tensor, head: Tensor, query: Tensor, key: Tensor) -> Tensor:
        return (document[query] == document[key]) & (key <= query)

    return FlexLayout(layout, create_block_mask(causal_within, None, None, size, size, device=device))


def _flex(module: Any, query: Tensor, key: Tensor, value: Tensor, plan: SegmentPlan, **kwargs: Any) -> Tensor:
    """flex_attention with a document-causal block mask over the concatenated sequences (compiled on CUDA)."""
    from torch.nn.attention.flex_attention import flex_attention

    layout: FlexLayout = plan.prepared("flex", query.device, lambda: _flex_layout(plan, query.device))
    q, k, v = (t.index_select(2, layout.gathered.index) for t in (query, key, value))
    attend: Any = compiled_flex() if query.is_cuda else flex_attention
    out = attend(
        q, k, v, block_mask=layout.block_mask, scale=kwargs.get("scaling"), enable_gqa=q.shape[1] != k.shape[1]
    )
    return out[0].transpose(0, 1).index_select(0, layout.gathered.output)[None]


@functools.cache
def compiled_flex() -> Callable[..., Tensor]:
    """``flex_attention`` compiled (once per process; its first call's time is logged)."""
    from torch.nn.attention.flex_attention import flex_attention

    compiled = torch.compile(flex_attention)
    first = True

    def attend(*args: Any, **kwargs: Any) -> Tensor:
        nonlocal first
        if not first:
            return compiled(*args, **kwargs)
        started = time.perf_counter()
        out: Tensor = compiled(*args, **kwargs)
        torch.cuda.synchronize()
        first = False
        seconds = time.perf_counter() - started
        logger.info("flex_attention compiled for the packed rows in %.1f s (once per process).", seconds)
        return out

    return attend


#: The kernels by name, in the order they are tried on CUDA (``sdpa`` runs anywhere).
KERNELS: dict[str, Callable[..., Tensor]] = {"varlen": _varlen, "flex": _flex, "sdpa": _sdpa}


def kernels_for(device: torch.device) -> list[str]:
    """The kernels worth trying on ``device``, best first (each is checked by the layout probe before use)."""
    if device.type != "cuda":
        return ["sdpa"]
    found = []
    try:
        varlen_function()
        found.append("varlen")
    except ImportError:
        pass
    try:
        import torch.nn.attention.flex_attention  # noqa: F401

        found.append("flex")
    except ImportError:
        pass
    return [*found, "sdpa"]


def attend(module: Any, query: Tensor, key: Tensor, value: Tensor, plan: SegmentPlan, **kwargs: Any) -> Tensor:
    """The packed row's attention output ``[1, T, heads, head_dim]`` by the plan's kernel (``sdpa`` for dropout)."""
    name = plan.kernel if not kwargs.get("dropout") else "sdpa"
    return KERNELS[name](module, query, key, value, plan, **kwargs)
