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
    """The per-token fields from the model's full ``[B, T, V]`` logits, computed as TRL 1.14 computes them.

    ``log_probs = z_y − logsumexp(z)`` (``log_softmax(z)[y]`` in half precision), ``entropy = −Σ_v p_v log p_v``,
    ``mean_logits = mean_v z_v``, ``is_top1 = [argmax z = y]``, ``log_sum_sq_probs = logsumexp(2z) − 2·logsumexp(z)
    = log Σ_v p_v²``, at every position whose next label is not ``-100`` (0 elsewhere).
    """

    def __call__(self, model: Any, model_kwargs: dict[str, Any], fields: Sequence[str] = ()) -> LogitsOutputs:
        kwargs = dict(model_kwargs)
        labels = kwargs.pop("labels")[:, 1:]
        outputs = model(**kwargs)
        logits = outputs.logits[:, :-1]
        scored = labels != -100
        targets = labels.clamp(min=0).unsqueeze(-1)
        if logits.dtype in (torch.float32, torch.float64):
            log_probs = logits.gather(-1, targets).squeeze(-1) - torch.logsumexp(logits, dim=-1)
        else:  # logsumexp loses precision in half precision
            log_probs = torch.log_softmax(logits, dim=-1).gather(-1, targets).squeeze(-1)
        result = LogitsOutputs(log_probs.masked_fill(~scored, 0.0), aux_loss=getattr(outputs, "aux_loss", None))
        if "entropy" in fields:
            log_softmax = torch.log_softmax(logits.detach(), dim=-1)
            result.entropy = (-(log_softmax.exp() * log_softmax).sum(-1)).masked_fill(~scored, 0.0)
        if "mean_logits" in fields:
            result.mean_logits = logits.detach().mean(-1).masked_fill(~scored, 0.0)
        if "is_top1" in fields:
            result.is_top1 = (logits.argmax(-1) == labels) & scored
        if WPO_FIELD in fields:
            with torch.no_grad():
                log_sum_sq = torch.logsumexp(2.0 * logits, dim=-1) - 2.0 * torch.logsumexp(logits, dim=-1)
            result.log_sum_sq_probs = log_sum_sq.masked_fill(~scored, 0.0)
        return result

    def ensure(self, model: Any) -> Any:
        return model
