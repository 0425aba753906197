"""Plain data types exchanged between the trainer, the losses and the checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch loads with the first loss, not with `import dpo_plugin`
    from torch import Tensor


@dataclass(frozen=True)
class PairLogps:
    """Per-sequence log-probabilities of a batch of preference pairs (all shape ``[B]``).

    ``chosen``/``rejected`` are the policy's log-probabilities summed over the completion tokens
    (with TRL's ``ld_alpha`` set, the LD-DPO weighted sums). ``ref_chosen``/``ref_rejected`` are the
    reference model's, ``None`` when the run has no reference. ``chosen_tokens``/``rejected_tokens``
    count the completion tokens. ``chosen_unweighted``/``rejected_unweighted`` are the plain sums
    when ``ld_alpha`` made ``chosen``/``rejected`` differ from them (``None`` otherwise).
    """

    chosen: Tensor
    rejected: Tensor
    ref_chosen: Tensor | None = None
    ref_rejected: Tensor | None = None
    chosen_tokens: Tensor | None = None
    rejected_tokens: Tensor | None = None
    chosen_unweighted: Tensor | None = None
    rejected_unweighted: Tensor | None = None

    @property
    def has_reference(self) -> bool:
        return self.ref_chosen is not None and self.ref_rejected is not None

    def logratios(self) -> tuple[Tensor, Tensor]:
        """``(chosen − ref_chosen, rejected − ref_rejected)``, the implicit rewards divided by β."""
        if self.ref_chosen is None or self.ref_rejected is None:
            raise ValueError(
                "This loss needs reference log-probabilities but PairLogps has none "
                "(ref_chosen/ref_rejected are None): use a reference strategy other than 'none'."
            )
        return self.chosen - self.ref_chosen, self.rejected - self.ref_rejected

    def token_counts(self) -> tuple[Tensor, Tensor]:
        """``(chosen_tokens, rejected_tokens)`` as floats clamped to ≥ 1."""
        if self.chosen_tokens is None or self.rejected_tokens is None:
            raise ValueError(
                "This loss normalises by completion length but PairLogps has no chosen_tokens/rejected_tokens."
            )
        return self.chosen_tokens.to(self.chosen.dtype).clamp(min=1), self.rejected_tokens.to(
            self.rejected.dtype
        ).clamp(min=1)

    def unweighted(self) -> tuple[Tensor, Tensor]:
        """Plain summed log-probabilities, ignoring LD-DPO's ``ld_alpha`` weighting."""
        chosen = self.chosen if self.chosen_unweighted is None else self.chosen_unweighted
        rejected = self.rejected if self.rejected_unweighted is None else self.rejected_unweighted
        return chosen, rejected

    @property
    def batch_size(self) -> int:
        return self.chosen.shape[0]


@dataclass
class LossOutput:
    """What a loss returns: per-pair ``losses`` ``[B]`` (not reduced), detached per-pair rewards, metrics.

    ``metrics`` maps a short name to a float or a scalar tensor; the trainer logs it as
    ``<loss name>/<metric name>``.
    """

    losses: Tensor
    chosen_rewards: Tensor
    rejected_rewards: Tensor
    metrics: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if hasattr(self.chosen_rewards, "detach"):
            self.chosen_rewards = self.chosen_rewards.detach()
        if hasattr(self.rejected_rewards, "detach"):
            self.rejected_rewards = self.rejected_rewards.detach()


@dataclass
class CheckResult:
    """The outcome of one post-training check.

    ``interval`` is the 95% confidence interval of the check's headline metric, ``threshold`` the
    value its lower bound must exceed. A check that could not run has ``passed=False`` and says why
    in ``skipped``.
    """

    name: str
    passed: bool
    metrics: dict[str, Any] = field(default_factory=dict)
    interval: tuple[float, float] | None = None
    threshold: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "passed": bool(self.passed),
            "metrics": dict(self.metrics),
            "interval": list(self.interval) if self.interval is not None else None,
            "threshold": self.threshold,
            "details": dict(self.details),
        }
        if self.skipped is not None:
            out["skipped"] = self.skipped
        return out
