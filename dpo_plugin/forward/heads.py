"""Per-token outputs of a causal LM over a batch: the step from the model's hidden states to log-probabilities.

A :class:`TokenHead` is called with the model's inputs (``labels`` set, ``-100`` where no token is
scored) and the per-token fields wanted besides ``log_probs``; what it returns carries each field
as a ``[B, T - 1]`` tensor aligned with the shifted labels (position ``t`` scores token ``t + 1``),
``None`` for fields it did not compute, and the model's ``aux_loss`` where there is one. A host lends
its head: TRL 1.16's fused LM head (no ``[B, T, V]`` logits; ``dpo_plugin.hosts.trl``), or
:class:`LogitsHead`, which computes the same fields from the full logits as TRL did before 1.16.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

#: Per-token fields the training forward asks for besides ``log_probs`` (TRL's metrics);
#: WPO's weights add ``log_sum_sq_probs``.
METRIC_FIELDS = ("entropy", "mean_logits", "is_top1")
WPO_FIELD = "log_sum_sq_probs"


class TokenOutputs(Protocol):
    """What a head returns: ``[B, T - 1]`` per-token fields (None when not computed), the router's ``aux_loss``."""

    log_probs: Tensor
    entropy: Tensor | None
    mean_logits: Tensor | None
    is_top1: Tensor | None
    log_sum_sq_probs: Tensor | None


class TokenHead(Protocol):
    """Per-token log-probabilities (and ``fields``) of a batch under a model, as its host computes them."""

    def __call__(self, model: Any, model_kwargs: dict[str, Any], fields: Sequence[str] = ()) -> TokenOutputs:
        """Run ``model`` on ``model_kwargs`` (with ``labels``) and return the per-token outputs."""
        ...

    def ensure(self, model: Any) -> Any:
        """``model`` ready for this head (e.g. patched once); returns the model."""
        ...


@dataclass
class LogitsOutputs:
    """:class:`TokenOutputs` computed from full logits."""

    log_probs: Tensor
    entropy: Tensor | None = None
    mean_logits: Tensor | None = None
    is_top1: Tensor | None = None
    log_sum_sq_probs: Tensor | None = None
    aux_loss: Tensor | None = None


class LogitsHead:
    """The per-token fields from the model's full ``[B, T, V]`` logits, in float32, one row at a time.

    ``log_probs = z_y − logsumexp(z)``, ``entropy = −Σ_v p_v log p_v``, ``mean_logits = mean_v z_v``,
    ``is_top1 = [argmax z = y]``, ``log_sum_sq_probs = logsumexp(2z) − 2·logsumexp(z) = log Σ_v p_v²``, at every
    position whose next label is not ``-100`` (0 elsewhere). As TRL 1.14 computes them: row by row (its peak
    memory), in float32 (its CUDA kernel's precision; a half-precision log-softmax is off by nats over a
    few hundred tokens).
    """

    def __call__(self, model: Any, model_kwargs: dict[str, Any], fields: Sequence[str] = ()) -> LogitsOutputs:
        kwargs = dict(model_kwargs)
        labels = kwargs.pop("labels")[:, 1:]
        outputs = model(**kwargs)
        rows = [_row_fields(row, targets, fields) for row, targets in zip(outputs.logits[:, :-1], labels)]
        stacked = {name: torch.stack([row[name] for row in rows]) for name in rows[0]}
        scored = labels != -100
        result = LogitsOutputs(
            stacked.pop("log_probs").masked_fill(~scored, 0.0), aux_loss=getattr(outputs, "aux_loss", None)
        )
        for name, values in stacked.items():
            setattr(result, name, values & scored if values.dtype == torch.bool else values.masked_fill(~scored, 0.0))
        return result

    def ensure(self, model: Any) -> Any:
        return model


def _row_fields(logits: Tensor, labels: Tensor, fields: Sequence[str]) -> dict[str, Tensor]:
    """One sequence's ``[T, V]`` logits → its per-token fields (see :class:`LogitsHead`)."""
    logits = logits.float()
    log_norm = torch.logsumexp(logits, dim=-1)
    row = {"log_probs": logits.gather(-1, labels.clamp(min=0)[:, None]).squeeze(-1) - log_norm}
    with torch.no_grad():
        if "entropy" in fields:
            probs = torch.softmax(logits, dim=-1)
            row["entropy"] = log_norm - (probs * logits).sum(-1)
        if "mean_logits" in fields:
            row["mean_logits"] = logits.mean(-1)
        if "is_top1" in fields:
            row["is_top1"] = logits.argmax(-1) == labels
        if WPO_FIELD in fields:
            row["log_sum_sq_probs"] = torch.logsumexp(2.0 * logits, dim=-1) - 2.0 * log_norm
    return row
